"""FilesSource on real folders: change detection, identity reuse, refusals, watch()."""

from __future__ import annotations

import asyncio
import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.cluster import files as files_module
from appliance.cluster.files import FilesSource
from appliance.model import ClusterState, Refusal


def service(name: str, port: int = 80, ns: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "selector": {"app": name}, "ports": [{"port": port}]},
    }


def slice_(name: str, svc: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]}],
        "ports": [{"port": 8080}],
    }


def write(path: Path, *docs: dict[str, Any]) -> None:
    """Write a file and push its mtime to a distinct past second, so the change is seen
    whatever the filesystem's timestamp tick (and the file is not 'racy')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    bump(path)


_clock = [1_700_000_000]


def bump(path: Path) -> None:
    _clock[0] += 1
    os.utime(path, ns=(_clock[0] * 10**9, _clock[0] * 10**9))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "manifests"
    write(root / "web.yaml", service("web"), slice_("web-a", "web", "198.18.64.10"))
    write(root / "echo.yaml", service("echo"), slice_("echo-a", "echo", "198.18.64.12"))
    write(root / "sub" / "db.yml", service("db", 5432))
    return root


def test_load_reads_recursively_and_skips_hidden_and_others(folder: Path) -> None:
    write(folder / ".web.yaml.swp", service("swap"))
    write(folder / ".git" / "x.yaml", service("hidden"))
    write(folder / "notes.txt", service("text"))
    (folder / "list.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}')
    state = FilesSource(folder).load()
    assert sorted(state.services) == ["shop/db", "shop/echo", "shop/web"]
    assert state.services["shop/db"].source == "sub/db.yml"
    assert state.services["shop/web"].source == "web.yaml#1"
    assert state.refused == ()


def test_poll_without_change_reads_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FilesSource(folder)
    source.load()
    reads: list[Path] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    assert source.poll() is None
    assert source.poll() is None
    assert reads == []


def test_modify_keeps_identity_of_everything_else(folder: Path) -> None:
    source = FilesSource(folder)
    first = source.load()
    write(folder / "web.yaml", service("web", 81), slice_("web-a", "web", "198.18.64.10"))
    second = source.poll()
    assert second is not None
    assert second.services["shop/web"].ports[0].port == 81
    assert second.services["shop/echo"] is first.services["shop/echo"]
    assert second.services["shop/db"] is first.services["shop/db"]
    # The slice did not change although its file was re-read: same object, same tuple.
    assert second.endpoint_slices["shop/web"] is first.endpoint_slices["shop/web"]
    assert second.endpoint_slices["shop/echo"] is first.endpoint_slices["shop/echo"]
    assert source.poll() is None

    write(folder / "web.yaml", service("web", 81), slice_("web-a", "web", "198.18.64.11"))
    third = source.poll()
    assert third is not None
    assert third.services["shop/web"] is second.services["shop/web"]
    assert third.endpoint_slices["shop/web"] is not second.endpoint_slices["shop/web"]
    assert third.endpoint_slices["shop/web"][0].endpoints[0].addresses == ("198.18.64.11",)
    assert third.endpoint_slices["shop/echo"] is first.endpoint_slices["shop/echo"]


def test_touch_or_comment_is_no_change(folder: Path) -> None:
    source = FilesSource(folder)
    source.load()
    bump(folder / "echo.yaml")
    assert source.poll() is None
    path = folder / "web.yaml"
    path.write_text("# a comment\n" + path.read_text())
    bump(path)
    assert source.poll() is None


def test_add_remove_rename(folder: Path) -> None:
    source = FilesSource(folder)
    first = source.load()
    write(folder / "cache.yaml", service("cache", 6379))
    added = source.poll()
    assert added is not None and "shop/cache" in added.services
    assert added.services["shop/web"] is first.services["shop/web"]

    (folder / "cache.yaml").unlink()
    removed = source.poll()
    assert removed is not None and "shop/cache" not in removed.services

    (folder / "echo.yaml").rename(folder / "sub" / "echo2.yaml")
    renamed = source.poll()
    assert renamed is not None
    assert renamed.services["shop/echo"].source == "sub/echo2.yaml#1"
    assert renamed.services["shop/web"] is first.services["shop/web"]
    assert source.poll() is None

    # A rename that replaces a file (how editors save): a new inode at the same path.
    tmp = folder / "db.tmp"
    tmp.write_text(yaml.safe_dump(service("db", 5433)))
    bump(tmp)
    tmp.replace(folder / "sub" / "db.yml")
    replaced = source.poll()
    assert replaced is not None and replaced.services["shop/db"].ports[0].port == 5433


def test_same_size_write_in_the_same_tick_is_seen(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The racy case: two writes of equal size inside one timestamp tick leave the stamp
    as it was. The scan is made to report the old stamp, as the filesystem would; a
    file read right after a write is read again anyway, once."""
    path = folder / "web.yaml"
    path.write_text(yaml.safe_dump(service("web", 81)))  # mtime: now
    source = FilesSource(folder)
    assert source.load().services["shop/web"].ports[0].port == 81
    frozen = source._scan().files["web.yaml"]
    real_scan = FilesSource._scan

    def same_tick(self: FilesSource) -> Any:
        scan = real_scan(self)
        scan.files["web.yaml"] = frozen
        return scan

    monkeypatch.setattr(FilesSource, "_scan", same_tick)
    path.write_text(yaml.safe_dump(service("web", 82)))
    state = source.poll()
    assert state is not None and state.services["shop/web"].ports[0].port == 82
    # Once the write is old enough, an unchanged stamp means an unchanged file again.
    monkeypatch.setattr(files_module, "RACY_NS", 0)
    assert source.poll() is None
    path.write_text(yaml.safe_dump(service("web", 83)))
    assert source.poll() is None  # the limit of stamps, stated: this write goes unseen


def test_bad_files_are_refusals(folder: Path) -> None:
    (folder / "bin.yaml").write_bytes(b"kind: Service\xff\xfe")
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    (folder / "dangling.yaml").symlink_to(folder / "nowhere.yaml")
    os.mkfifo(folder / "fifo.yaml")  # would block a read
    write(folder / "broken.yaml", service("ok"))
    with (folder / "broken.yaml").open("a") as f:
        f.write("---\nkind: [\n")
    state = FilesSource(folder).load()
    assert "shop/ok" in state.services and "shop/web" in state.services
    reasons = {r.name: r.reason for r in state.refused}
    assert reasons["bin.yaml"] == "not UTF-8 text (byte 13)"
    assert reasons["loop.yaml"] == f"cannot read: {os.strerror(errno.ELOOP)}"
    end = len((folder / "broken.yaml").read_text().splitlines()) + 1  # the list never closes
    # ours: the prefix and the place; the problem after it is PyYAML's (libyaml's) wording
    assert re.fullmatch(
        rf"YAML syntax error at line {end}, column 1: \S[^\n]*", reasons["broken.yaml"]
    ), reasons["broken.yaml"]
    assert set(reasons) == {"bin.yaml", "loop.yaml", "broken.yaml"}
    assert all(r.kind == "File" for r in state.refused)


def test_a_syntax_error_keeps_the_last_good_file(folder: Path) -> None:
    source = FilesSource(folder)
    first = source.load()
    path = folder / "web.yaml"
    path.write_text(path.read_text().replace("name: web-a", "name: [web-a"))
    bump(path)
    broken = source.poll()
    assert broken is not None
    assert broken.services["shop/web"] is first.services["shop/web"]
    assert broken.endpoint_slices["shop/web"] is first.endpoint_slices["shop/web"]
    (refusal,) = broken.refused
    assert refusal.kind == "File" and refusal.name == "web.yaml"
    assert refusal.reason.endswith("; its last good version stays in force")
    write(path, service("web", 8080))  # fixed: the new content, and no refusal
    fixed = source.poll()
    assert fixed is not None
    assert fixed.services["shop/web"].ports[0].port == 8080
    assert "shop/web" not in fixed.endpoint_slices
    assert fixed.refused == ()


def test_an_unreadable_file_keeps_its_last_good_objects(folder: Path) -> None:
    source = FilesSource(folder)
    first = source.load()
    (folder / "echo.yaml").write_bytes(b"kind: Service\xff")
    bump(folder / "echo.yaml")
    state = source.poll()
    assert state is not None
    assert state.services["shop/echo"] is first.services["shop/echo"]
    assert [r.reason for r in state.refused] == [
        "not UTF-8 text (byte 13); its last good version stays in force"
    ]


def test_an_object_made_invalid_keeps_its_last_good_version(folder: Path) -> None:
    source = FilesSource(folder)
    first = source.load()
    write(folder / "web.yaml", service("web", 70000), slice_("web-a", "web", "198.18.64.11"))
    state = source.poll()
    assert state is not None
    assert state.services["shop/web"] is first.services["shop/web"]  # port 80, still served
    assert state.endpoint_slices["shop/web"][0].endpoints[0].addresses == ("198.18.64.11",)
    assert [str(r) for r in state.refused] == [
        "Service shop/web: spec.ports[0].port: must be 1-65535, got 70000; "
        "its last good version stays in force (web.yaml#1)"
    ]
    # A new object that is invalid from the start has no last good version.
    write(folder / "new.yaml", service("new", 0))
    state = source.poll()
    assert state is not None
    assert "shop/new" not in state.services
    # Removing the file removes its objects: that is a change, not a mistake.
    (folder / "web.yaml").unlink()
    state = source.poll()
    assert state is not None
    assert "shop/web" not in state.services


def test_missing_folder_then_created(tmp_path: Path) -> None:
    root = tmp_path / "later"
    source = FilesSource(root)
    state = source.load()
    assert state.services == {}
    assert state.refused == (Refusal("File", "", str(root), "no such folder", str(root)),)
    assert source.poll() is None
    write(root / "web.yaml", service("web"))
    state2 = source.poll()
    assert state2 is not None and list(state2.services) == ["shop/web"]
    assert state2.refused == ()


def test_configmap_style_symlink_swap(tmp_path: Path) -> None:
    """A ConfigMap volume: visible files are symlinks into ..data, which is swapped."""
    root = tmp_path / "cm"
    write(root / "..2026_1" / "web.yaml", service("web", 80))
    (root / "..data").symlink_to("..2026_1")
    (root / "web.yaml").symlink_to("..data/web.yaml")
    source = FilesSource(root)
    assert source.load().services["shop/web"].ports[0].port == 80
    write(root / "..2026_2" / "web.yaml", service("web", 8080))
    (root / "..data_tmp").symlink_to("..2026_2")
    (root / "..data_tmp").replace(root / "..data")
    state = source.poll()
    assert state is not None and state.services["shop/web"].ports[0].port == 8080
    assert list(state.services) == ["shop/web"]  # the hidden folders were not read


def test_poll_before_load_loads(folder: Path) -> None:
    state = FilesSource(folder).poll()
    assert state is not None and len(state.services) == 3


def test_watch_yields_first_then_changes(folder: Path) -> None:
    async def run() -> list[ClusterState]:
        source = FilesSource(folder)
        seen: list[ClusterState] = []
        stream = source.watch(interval=0.01)
        seen.append(await asyncio.wait_for(anext(stream), 10))
        write(folder / "cache.yaml", service("cache", 6379))
        seen.append(await asyncio.wait_for(anext(stream), 10))
        (folder / "cache.yaml").unlink()
        seen.append(await asyncio.wait_for(anext(stream), 10))
        await stream.aclose()
        return seen

    states = asyncio.run(run())
    assert [sorted(s.services) for s in states] == [
        ["shop/db", "shop/echo", "shop/web"],
        ["shop/cache", "shop/db", "shop/echo", "shop/web"],
        ["shop/db", "shop/echo", "shop/web"],
    ]


def test_parser_bug_is_contained(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, source: str) -> Any:
        raise TypeError("boom")

    monkeypatch.setattr(files_module, "parse_text", broken)
    state = FilesSource(folder).load()
    assert state.services == {}
    assert {r.reason for r in state.refused} == {
        "could not be read (TypeError: boom); please report this"
    }

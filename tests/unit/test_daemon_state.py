"""The allocations state file through the daemon: VIPs stay across a restart with the files
source (no status to read), and a corrupt file costs one log line, not the daemon."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog
import yaml

from appliance.daemon.loop import Daemon
from appliance.daemon.parts import FilesFeed, Parts
from appliance.daemon.statestore import AllocationStore
from tests.unit.test_daemon import MemoryDataplane, base_config


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": [{"port": 80, "nodePort": 30080}],
        },
    }


def write_services(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        if old.stem not in names:
            old.unlink()
    for name in names:
        path = folder / f"{name}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(service(name)))


def vips_of(daemon: Daemon) -> dict[str, tuple[str, ...]]:
    assert daemon.desired is not None
    return {k: a.addresses for k, a in daemon.desired.allocations.items()}


async def until(cond: Any, what: str, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


def run_daemon(folder: Path, store: AllocationStore | None, steps: Any) -> Daemon:
    """Start a daemon on the folder, run `steps(daemon)`, stop it: one life of the host."""
    daemon = Daemon(
        base_config(),
        Parts(FilesFeed(str(folder), interval=0.01), MemoryDataplane([])),
        store=store,
        debounce=0.001,
        host="lb-test",
    )

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            await steps(daemon)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
    return daemon


def history(tmp_path: Path, store: AllocationStore | None) -> tuple[dict[str, Any], ...]:
    """a, b, c; then a deleted and d added; then a restart. The VIPs before and after."""
    folder = tmp_path / "manifests"
    write_services(folder, "a", "b", "c")
    seen: list[dict[str, Any]] = []

    async def first_life(d: Daemon) -> None:
        await until(lambda: d.desired is not None and len(d.desired.allocations) == 3, "a b c")
        write_services(folder, "b", "c", "d")
        await until(lambda: "shop/d" in vips_of(d), "d allocated")
        seen.append(vips_of(d))

    async def second_life(d: Daemon) -> None:
        await until(lambda: d.desired is not None and len(d.desired.allocations) == 3, "resync")
        seen.append(vips_of(d))

    run_daemon(folder, store, first_life)
    run_daemon(folder, AllocationStore(store.path) if store else None, second_life)
    return tuple(seen)


def test_without_a_state_file_the_survivors_swap_addresses(tmp_path: Path) -> None:
    before, after = history(tmp_path, None)  # the bug this file is for, as it was
    assert before != after


def test_vips_stay_where_they_were_across_a_restart_with_the_files_source(
    tmp_path: Path,
) -> None:
    store = AllocationStore.in_dir(str(tmp_path))
    before, after = history(tmp_path, store)
    assert before == after
    assert before["shop/d"] == ("198.18.50.16",)  # d took a's address, and keeps it
    assert AllocationStore(store.path).load().keys() == {"shop/b", "shop/c", "shop/d"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allocations.json", "manifests"]


def test_a_corrupt_state_file_is_one_log_line_and_the_daemon_serves(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    write_services(folder, "a", "b")
    state = tmp_path / "allocations.json"
    state.write_bytes(b'{"version": 1, "allocations": {"shop/a": ')

    async def serve(d: Daemon) -> None:
        await until(lambda: d.desired is not None and len(d.desired.allocations) == 2, "sync")

    with structlog.testing.capture_logs() as logs:
        daemon = run_daemon(folder, AllocationStore(str(state)), serve)
    about = [e for e in logs if str(state) in str(e)]
    assert len(about) == 1, about
    (line,) = about
    assert line["log_level"] == "error"
    assert line["event"] == (
        f"state file {state} refused: not JSON: line 1 column 42: Expecting value; "
        "VIPs are allocated afresh"
    )
    assert daemon.ready
    assert vips_of(daemon) == {"shop/a": ("198.18.50.16",), "shop/b": ("198.18.50.17",)}
    # ... and the file is good again once the plan is written
    assert AllocationStore(str(state)).load().keys() == {"shop/a", "shop/b"}

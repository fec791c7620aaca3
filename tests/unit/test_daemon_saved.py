"""The saved cluster snapshot (state_dir/last-state.json) through its store and the loop:
written off the loop, rate-limited, the newest one always written, and at a clean stop;
at start, before the source answers, the saved one is served as not live (the speaker
stays planless, no status is written back) until the source's first snapshot."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from appliance.commands.daemon import overview
from appliance.daemon import snapshot
from appliance.daemon.statestore import SnapshotStore
from appliance.model import ClusterState
from appliance.plan.snapshotfile import SavedState, decode_state, encode_state
from appliance.status import Status, to_json
from tests.unit.test_daemon import Rig, _with_daemon, cluster, local_nodes
from tests.unit.test_snapshotfile import FULL
from tests.unit.test_web import client

SAVED_AT = 1767225600.0  # 2026-01-01 00:00 UTC


def on_disk(path: Path) -> ClusterState:
    return decode_state(path.read_bytes()).state


async def until(cond: Any, what: str, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.002)


# --- the store -----------------------------------------------------------------------------


def test_load_without_a_file_is_none_and_says_nothing(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        assert SnapshotStore.in_dir(str(tmp_path)).load() is None
    assert logs == []


def test_a_corrupt_a_foreign_and_an_unreadable_file_are_one_log_line_each(tmp_path: Path) -> None:
    path = tmp_path / "last-state.json"
    cases = {
        "cut": (encode_state(FULL, SAVED_AT)[:-40], "not JSON: line 1 column"),
        "version": (b'{"version": 7}', "version 7 is not supported (this daemon reads 1)"),
    }
    for name, (data, reason) in cases.items():
        path.write_bytes(data)
        with structlog.testing.capture_logs() as logs:
            assert SnapshotStore(str(path)).load() is None, name
        assert len(logs) == 1, logs
        assert logs[0]["log_level"] == "error"
        assert logs[0]["event"].startswith(f"saved cluster state {path} refused: {reason}")
        assert logs[0]["event"].endswith("nothing is served until the cluster source answers")
    path.unlink()
    path.mkdir()  # read() of a folder: EISDIR
    with structlog.testing.capture_logs() as logs:
        assert SnapshotStore(str(path)).load() is None
    assert [e["reason"] for e in logs] == ["cannot read: Is a directory"]


def test_writes_are_rate_limited_and_the_newest_one_is_written(tmp_path: Path) -> None:
    path = tmp_path / "last-state.json"
    store = SnapshotStore(str(path), every=0.3)
    first, burst = cluster(), [cluster(replicas_on=(f"node-{i}",)) for i in (1, 2, 3)]

    async def main() -> None:
        writer = asyncio.create_task(store.run())
        try:
            store.offer(first, SAVED_AT)
            await until(path.exists, "the first write, at once")
            t0 = time.monotonic()
            assert on_disk(path) == first
            for s in burst:
                store.offer(s, SAVED_AT + 1)
                await asyncio.sleep(0.02)
            assert on_disk(path) == first  # within the interval: not yet
            await until(lambda: store.writes["ok"] == 2, "the burst's write", 2.0)
            assert time.monotonic() - t0 >= 0.2
            assert on_disk(path) == burst[-1]  # only the newest: one write for the burst
            assert decode_state(path.read_bytes()).saved_at == SAVED_AT + 1
            store.offer(burst[-1], SAVED_AT + 2)  # the same snapshot again: nothing to do
            assert not store.pending
            store.offer(decode_state(path.read_bytes()).state, SAVED_AT + 3)  # an equal one
            await until(lambda: store.writes["skipped"] == 1, "an equal snapshot skipped", 2.0)
        finally:
            writer.cancel()

    asyncio.run(main())
    assert store.writes == {"ok": 2, "skipped": 1}
    assert store.last_write_bytes == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-state.json"]  # no temp left


def test_flush_writes_the_pending_one_now_whatever_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "last-state.json"
    store = SnapshotStore(str(path), every=3600)

    async def main() -> None:
        writer = asyncio.create_task(store.run())
        store.offer(cluster(), SAVED_AT)
        await until(lambda: store.writes["ok"] == 1, "the first write")
        store.offer(FULL, SAVED_AT + 5)
        await asyncio.sleep(0.05)
        assert store.pending and on_disk(path) == cluster()
        writer.cancel()
        await store.flush()

    asyncio.run(main())
    assert on_disk(path) == FULL and not store.pending


def test_a_failed_write_is_one_log_line_and_is_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "state"  # not there yet
    store = SnapshotStore.in_dir(str(folder), every=0.05)

    async def main() -> None:
        writer = asyncio.create_task(store.run())
        try:
            store.offer(cluster(), SAVED_AT)
            await until(lambda: store.writes["failed"] >= 3, "three failures")
            folder.mkdir()
            await until(lambda: store.writes["ok"] == 1, "written once the folder is there")
        finally:
            writer.cancel()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    assert [e["reason"] for e in logs] == ["cannot write: No such file or directory"]
    assert on_disk(folder / "last-state.json") == cluster()


# --- the loop ------------------------------------------------------------------------------


def saved_rig(tmp_path: Path, saved: ClusterState | None = None, every: float = 0.05) -> Rig:
    path = tmp_path / "last-state.json"
    if saved is not None:
        path.write_bytes(encode_state(saved, SAVED_AT))
    return Rig(snapshots=SnapshotStore(str(path), every=every))


def test_the_saved_plan_is_served_before_the_source_answers_then_the_live_one(
    tmp_path: Path,
) -> None:
    rig = saved_rig(tmp_path, cluster(replicas_on=("node-1",)))
    d = rig.daemon
    snaps: list[Status] = []

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "the saved plan applied")
        await rig.until(lambda: rig.dns.records != frozenset(), "the saved records served")
        assert rig.speaker.planned == [False]  # VIPs given, but as not live
        assert {v.address for v in rig.speaker.vips} == {"198.18.50.16", "198.18.50.17"}
        assert local_nodes(rig.dataplane.applied[0]) == {"node-1"}
        await asyncio.sleep(0.05)
        assert "publish" not in rig.journal  # stale: never written back as status
        assert d.ready
        snaps.append(snapshot.build(d))

        rig.source.push(cluster())  # the source answers
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "the live plan applied")
        await rig.until(lambda: "publish" in rig.journal, "status written back")
        assert rig.speaker.planned == [False, True]
        assert local_nodes(rig.dataplane.applied[1]) == {"node-1", "node-2"}
        assert rig.source.published == [rig.dataplane.applied[1]]
        snaps.append(snapshot.build(d))
        await rig.until(lambda: on_disk(tmp_path / "last-state.json") == cluster(), "saved")
        await rig.until(lambda: d.snapshots is not None and d.snapshots.writes["ok"] == 1, "ok")
        snaps.append(snapshot.build(d))

    asyncio.run(_with_daemon(rig, body))
    saving, live, written = snaps
    assert to_json(saving)["source"]["saved_plan"] == {"saved_at": SAVED_AT, "services": 2}
    assert to_json(saving)["source"]["saved_state"]["writes"] == {}  # the saved one is not re-saved
    assert to_json(live)["source"]["saved_plan"] is None
    assert to_json(live)["source"]["saved_state"]["file"] == str(tmp_path / "last-state.json")
    assert to_json(written)["source"]["saved_state"]["writes"] == {"ok": 1}
    messages = [e.message for e in d.events]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(SAVED_AT))
    assert (
        f"serving the last known plan saved at {when} (2 services); the cluster source has "
        "not answered since start"
    ) in messages
    assert "the cluster source answered: its plan replaces the saved one" in messages

    # The page, `appliance status` and /metrics say so while it lasts, and only then.
    prefix = f"serving the last known plan saved at {when} ("
    suffix = "ago, 2 services); the cluster source has not answered since start"
    page = client(saving).get("/").get_data(as_text=True)
    (span,) = re.findall(r'<span class="warn" id="saved-plan">([^<]*)</span>', page)
    assert span.startswith(prefix) and span.endswith(suffix), span
    (line,) = [x for x in overview(to_json(saving)).splitlines() if x.startswith(prefix)]
    assert line.endswith(suffix), line
    assert not [x for x in overview(to_json(live)).splitlines() if x.startswith(prefix)]
    assert 'id="saved-plan"' not in client(live).get("/").get_data(as_text=True)

    def metrics(snap: Status) -> dict[str, float]:
        text = client(snap).get("/metrics").get_data(as_text=True)
        return {
            s.name + str(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    m = metrics(saving)
    assert m["appliance_plan_from_saved_state[]"] == 1
    assert m["appliance_plan_saved_timestamp_seconds[]"] == SAVED_AT
    m = metrics(written)
    assert m["appliance_plan_from_saved_state[]"] == 0
    assert m["appliance_plan_saved_timestamp_seconds[]"] == 0
    assert m["appliance_state_snapshot_writes_total[('result', 'ok')]"] == 1
    assert m["appliance_state_snapshot_write_seconds[]"] > 0


class SlowStore(SnapshotStore):
    """A big file: the source answers while it is still being read."""

    def load(self) -> SavedState | None:
        time.sleep(0.2)
        return super().load()


def test_a_source_that_answers_first_wins_and_the_saved_plan_is_never_served(
    tmp_path: Path,
) -> None:
    path = tmp_path / "last-state.json"
    path.write_bytes(encode_state(cluster(replicas_on=("node-3",)), SAVED_AT))
    rig = Rig(snapshots=SlowStore(str(path), every=0.05))
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "the live plan")
        await asyncio.sleep(0.4)  # the saved one has been read meanwhile

    asyncio.run(_with_daemon(rig, body))
    assert [local_nodes(a) for a in rig.dataplane.applied] == [{"node-1", "node-2"}]
    assert rig.speaker.planned == [True]
    assert rig.daemon.saved is None
    assert on_disk(path) == cluster()


def test_a_source_that_answers_within_the_grace_is_never_preceded_by_the_saved_plan(
    tmp_path: Path,
) -> None:
    rig = saved_rig(tmp_path, cluster(replicas_on=("node-3",)))  # read at once: a small file

    async def body() -> None:
        await asyncio.sleep(0.2)  # a files source's first sweep, or an API that answers
        assert rig.dataplane.applied == []
        rig.source.push(cluster())
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "the live plan")
        await asyncio.sleep(rig.daemon.saved_grace)

    asyncio.run(_with_daemon(rig, body))
    assert [local_nodes(a) for a in rig.dataplane.applied] == [{"node-1", "node-2"}]
    assert rig.speaker.planned == [True]
    assert not [e for e in rig.daemon.events if "saved" in e.message]


def test_a_corrupt_saved_file_is_one_line_and_the_daemon_waits_for_the_source(
    tmp_path: Path,
) -> None:
    path = tmp_path / "last-state.json"
    path.write_bytes(b'{"version": 1, "saved_at": 1, "fields": {')
    rig = Rig(snapshots=SnapshotStore(str(path), every=0.05))

    async def body() -> None:
        await asyncio.sleep(0.2)
        assert rig.dataplane.applied == [] and rig.speaker.planned == []
        rig.source.push(cluster())
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "the live plan")
        await rig.until(lambda: path.stat().st_size > 100, "the file good again")

    with structlog.testing.capture_logs() as logs:
        asyncio.run(_with_daemon(rig, body))
    about = [e for e in logs if str(path) in str(e.get("event"))]
    assert len(about) == 1, about
    assert "not JSON" in about[0]["event"]
    assert rig.speaker.planned == [True]
    assert on_disk(path) == cluster()


def test_a_burst_of_snapshots_costs_one_write_per_interval_and_the_last_is_kept(
    tmp_path: Path,
) -> None:
    rig = saved_rig(tmp_path, every=0.5)
    path = tmp_path / "last-state.json"
    states = [cluster(replicas_on=(f"node-{i % 3 + 1}",)) for i in range(8)] + [cluster()]

    async def body() -> None:
        rig.source.push(states[0])
        await rig.until(path.exists, "the first snapshot written")
        for s in states[1:]:
            rig.source.push(s)
            await rig.until(lambda s=s: rig.daemon.state is s, "synced")
            await asyncio.sleep(0.01)
        assert rig.daemon.snapshots is not None
        assert rig.daemon.snapshots.writes["ok"] == 1  # the rest wait for the interval
        await rig.until(lambda: on_disk(path) == cluster(), "the newest one written", 2.0)

    asyncio.run(_with_daemon(rig, body))
    assert rig.daemon.snapshots is not None
    assert rig.daemon.snapshots.writes["ok"] == 2


def test_a_clean_stop_writes_the_pending_snapshot(tmp_path: Path) -> None:
    rig = saved_rig(tmp_path, every=3600)
    path = tmp_path / "last-state.json"

    async def body() -> None:
        rig.source.push(cluster(replicas_on=("node-1",)))
        await rig.until(path.exists, "the first snapshot written")
        rig.source.push(cluster())
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "the second synced")
        assert rig.daemon.snapshots is not None and rig.daemon.snapshots.pending

    asyncio.run(_with_daemon(rig, body))  # request_stop, then run() returns
    assert on_disk(path) == cluster()
    assert os.listdir(tmp_path) == ["last-state.json"]

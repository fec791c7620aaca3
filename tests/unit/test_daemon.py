"""The daemon's loop against in-memory adapters: debounce, the order of a sync, health fed
back into the plan, reload with a bad and a good config, the SIGTERM order, systemd
notify, JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest
import structlog

from appliance.config import Config, ConfigError, DnsConfig, HealthConfig, TrackConfig, WebConfig
from appliance.daemon import loop as daemon_loop
from appliance.daemon import snapshot
from appliance.daemon.loop import Daemon
from appliance.daemon.notify import Notifier
from appliance.daemon.parts import Parts
from appliance.dataplane.base import ApplyReport, DataplaneError
from appliance.dns.server import DnsStats
from appliance.ha.status import HaStatus, InstanceStatus, instance_vips
from appliance.health.checker import TargetStatus
from appliance.health.targets import Target
from appliance.logs import configure
from appliance.model import ClusterState, DesiredState, Record, Vip, VirtualService
from appliance.status import Status, to_json
from tests.unit.builders import config as make_config
from tests.unit.builders import ep, lb, pool, slice_, state

Journal = list[str]


# --- in-memory adapters --------------------------------------------------------------------


class MemorySource:
    kind = "memory"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.queue: asyncio.Queue[ClusterState] | None = None
        self.pending: list[ClusterState] = []
        self.published: list[DesiredState] = []
        self.closed = False
        self.connected: bool | None = None  # None: a source that does not say (files)

    def push(self, s: ClusterState) -> None:
        if self.queue is None:
            self.pending.append(s)
        else:
            self.queue.put_nowait(s)

    async def open(self) -> None:
        self.queue = asyncio.Queue()
        for s in self.pending:
            self.queue.put_nowait(s)

    async def states(self) -> AsyncIterator[ClusterState]:
        assert self.queue is not None
        while True:
            yield await self.queue.get()

    async def publish(self, s: ClusterState, desired: DesiredState) -> None:
        self.journal.append("publish")
        self.published.append(desired)

    def status(self) -> Mapping[str, Any]:
        return {
            "kind": "memory",
            **({} if self.connected is None else {"connected": self.connected}),
        }

    async def close(self) -> None:
        self.journal.append("source.close")
        self.closed = True


class MemoryDataplane:
    name = "memory"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.applied: list[DesiredState] = []
        self.fail: str | None = None
        self._last: tuple[Any, ...] | None = None
        self.active: dict[str, int] = {}  # node -> open connections, on every service
        self.reads = 0
        self.hold_reads: asyncio.Event | None = None  # set: reads wait on it
        self.broken_reads = False  # a backend breaking its never-raise promise
        self.draining = 0  # real servers at weight 0: each apply() sees one more go idle
        self.closed = False

    async def apply(self, desired: DesiredState) -> ApplyReport:
        self.journal.append("dataplane.apply")
        if self.fail:
            raise DataplaneError(self.fail)
        self.draining = max(0, self.draining - 1)
        self.applied.append(desired)
        changed = desired.virtual_services != self._last
        self._last = desired.virtual_services
        return ApplyReport("memory", added=("x",) if changed else ())

    async def connections(self) -> Mapping[tuple[str, int, str], Mapping[str, int]]:
        self.reads += 1
        if self.hold_reads is not None:
            await self.hold_reads.wait()
        if self.broken_reads:
            raise RuntimeError("conntrack exploded")
        return {
            vs.key: {rs.address: self.active.get(rs.node, 0) for rs in vs.real_servers}
            for vs in self._last or ()
        }

    async def current(self) -> tuple[VirtualService, ...]:
        return tuple(self._last or ())

    def render(self, desired: DesiredState) -> str:
        return f"{len(desired.virtual_services)} virtual services\n"

    def pending_drains(self) -> int:
        return self.draining

    def close(self) -> None:
        self.closed = True


class MemorySpeaker:
    """Master of one instance owning every VIP; stop() resigns then removes the VIPs."""

    def __init__(self, journal: Journal, cfg: Config, hang: bool = False) -> None:
        self.journal = journal
        self.instance = cfg.ha.instances[0] if cfg.ha.instances else None
        self.on_change: Callable[[InstanceStatus], None] | None = None
        self.vips: tuple[Vip, ...] = ()
        self.held: set[str] = set()
        self.state = "initialize"
        self.hang = hang
        self.failing: dict[str, str] = {}
        self.held_back: dict[str, str] = {}
        self.planned: list[bool] = []

    async def start(self) -> None:
        self.journal.append("speaker.start")
        self.state = "master"

    def hold(self, instances: Mapping[str, str]) -> None:
        if instances != self.held_back:
            self.journal.append("speaker.hold:" + ",".join(sorted(instances)))
        self.held_back = dict(instances)

    def track(self, failing: Mapping[str, str]) -> None:
        if failing != self.failing:
            self.journal.append("speaker.track:" + ",".join(sorted(failing)))
        self.failing = dict(failing)

    def set_vips(self, vips: Iterable[Vip], *, planned: bool = True) -> None:
        self.journal.append("speaker.set_vips")
        self.planned.append(planned)  # False: a saved plan, the speaker stays planless
        self.vips = tuple(vips)
        self.held = {v.address for v in self.vips}

    def status(self) -> HaStatus:
        held = tuple(sorted(self.held))
        inst = InstanceStatus(
            "vi-1", 51, "IPv4", self.state, time.time(), "test", "198.18.50.1", 100, 0.1,
            0, 0, {}, held, held if self.state == "master" else (),
        )  # fmt: skip
        return HaStatus("eth-test", (inst,), {})

    async def stop(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        self.journal.append("speaker.resign(priority=0)")
        self.journal.append("speaker.release:" + ",".join(sorted(self.held)))
        self.held.clear()
        self.state = "initialize"


class MemoryDns:
    def __init__(self, journal: Journal, config: DnsConfig | None = None) -> None:
        self.journal = journal
        self.config = config or DnsConfig()
        self.records: frozenset[Record] = frozenset()

    async def start(self) -> None:
        if self.config.listen == (("198.18.50.9", 53),):  # an address this host lacks
            raise OSError("cannot listen on 198.18.50.9:53/udp: Cannot assign requested address")
        self.journal.append(f"dns.start:{','.join(self.config.zones)}")

    async def update(self, records: Iterable[Record]) -> object:
        self.journal.append("dns.update")
        self.records = frozenset(records)
        return None

    def stats(self) -> DnsStats:
        return DnsStats(1, len(self.records), ("cluster.local",), {"NOERROR": 3}, 3, 0, (), 0)

    async def stop(self) -> None:
        self.journal.append("dns.stop")


class MemoryHealth:
    def __init__(self) -> None:
        self.on_change: Callable[[], None] | None = None
        self.on_transition: Callable[[Target, str, str, str], None] | None = None
        self.checks = 0
        self.results: Counter[str] = Counter()
        self.targets: tuple[Target, ...] = ()
        self.verdicts: dict[tuple[str, str], bool] = {}

    def update(self, targets: Iterable[Target]) -> None:
        self.targets = tuple(targets)

    def health(self) -> Mapping[tuple[str, str], bool]:
        return dict(self.verdicts)

    def set(self, key: tuple[str, str], up: bool) -> None:
        before = {None: "unknown", True: "up", False: "down"}[self.verdicts.get(key)]
        self.verdicts[key] = up
        self.checks += 1
        self.results["ok" if up else "failed"] += 1
        (t,) = [t for t in self.targets if t.key == key]
        after = "up" if up else "down"
        if self.on_transition is not None and after != before:  # as the checker: once
            self.on_transition(t, before, after, "" if up else "connection refused")
        if self.on_change is not None:
            self.on_change()

    def statuses(self) -> tuple[TargetStatus, ...]:
        out = []
        for t in self.targets:
            up = self.verdicts.get(t.key)
            verdict = "unknown" if up is None else "up" if up else "down"
            err = "" if up is not False else "connection refused"
            out.append(TargetStatus(t, verdict, 0.0, None, up, err, None, 1, 0))  # type: ignore[arg-type]
        return tuple(out)

    async def run(self) -> None:
        await asyncio.Event().wait()


# --- fixtures ------------------------------------------------------------------------------


def cluster(*, replicas_on: tuple[str, ...] = ("node-1", "node-2")) -> ClusterState:
    """web (Cluster policy) and echo (Local) with pods on the given nodes."""
    eps = [ep(f"198.18.64.{10 + i}", n) for i, n in enumerate(replicas_on)]
    return state(
        lb("web"),
        lb("echo", age=1, external_traffic_policy="Local", health_check_node_port=32001),
        slices=(slice_("web", *eps), slice_("echo", *eps)),
    )


def local_nodes(d: DesiredState) -> set[str]:
    """The nodes behind echo (externalTrafficPolicy Local: only those with its pods)."""
    return {rs.node for vs in d.virtual_services if vs.service == "shop/echo"
            for rs in vs.real_servers}  # fmt: skip


def base_config() -> Config:
    return replace(
        make_config(pool("default", "198.18.50.16/28")), health=HealthConfig(interval=5.0)
    )


class Rig:
    def __init__(self, cfg: Config | None = None, **kw: Any) -> None:
        self.journal: Journal = []
        self.cfg = cfg or base_config()
        self.source = MemorySource(self.journal)
        self.dataplane = MemoryDataplane(self.journal)
        self.speaker = MemorySpeaker(self.journal, self.cfg, hang=kw.pop("hang", False))
        self.dns = MemoryDns(self.journal)
        self.health = MemoryHealth()
        parts = Parts(self.source, self.dataplane, self.speaker, self.dns, self.health)
        kw.setdefault("debounce", 0.005)
        kw.setdefault("host", "lb-test")
        self.daemon = Daemon(self.cfg, parts, **kw)

    async def until(self, cond: Callable[[], bool], what: str, limit: float = 5.0) -> None:
        end = time.monotonic() + limit
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"never happened: {what}; journal {self.journal}")
            await asyncio.sleep(0.002)


async def _with_daemon(rig: Rig, body: Callable[[], Any]) -> None:
    task = asyncio.create_task(rig.daemon.run())
    try:
        await body()
    finally:
        rig.daemon.request_stop()
        await asyncio.wait_for(task, 5)


# --- the loop ------------------------------------------------------------------------------


def test_a_burst_of_snapshots_is_planned_once_with_the_last_one() -> None:
    rig = Rig()
    burst = [cluster(replicas_on=("node-1",)) for _ in range(4)] + [cluster()]
    for s in burst:
        rig.source.push(s)

    async def body() -> None:
        await rig.until(lambda: rig.daemon.last_sync is not None, "first sync")
        await asyncio.sleep(0.05)  # nothing else is pending: no second sync may follow

    asyncio.run(_with_daemon(rig, body))
    assert len(rig.dataplane.applied) == 1
    assert local_nodes(rig.dataplane.applied[0]) == {"node-1", "node-2"}  # the burst's last
    assert rig.daemon.ready


def test_draining_real_servers_are_finished_with_no_other_change() -> None:
    """IPVS keeps a leaving real server at weight 0 until an apply() finds it idle or past
    drain_timeout: the daemon applies the same plan again until none is left, then stops."""
    rig = Rig()
    rig.daemon.drain_recheck = 0.01
    rig.dataplane.draining = 3
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.dataplane.draining == 0, "the drains finished")
        await asyncio.sleep(0.1)  # none left: no more applies

    asyncio.run(_with_daemon(rig, body))
    first, *again = rig.dataplane.applied
    assert len(again) == 2, rig.journal
    assert all(d is first for d in again)  # the last plan again, not a new one
    assert rig.daemon.counters.syncs["ok"] == 1
    assert rig.dataplane.closed


def test_one_sync_drives_every_adapter_in_order() -> None:
    rig = Rig()
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: "publish" in rig.journal, "status write-back")

    asyncio.run(_with_daemon(rig, body))
    sync = [e for e in rig.journal if e in ("dataplane.apply", "speaker.set_vips", "dns.update")]
    assert sync[:3] == ["dataplane.apply", "speaker.set_vips", "dns.update"]
    assert rig.journal.index("dns.update") < rig.journal.index("publish")
    vips = {v.address for v in rig.speaker.vips}
    assert len(vips) == 2 and all(v.startswith("198.18.50.") for v in vips)
    assert {r.rtype for r in rig.dns.records} >= {"A"}
    assert rig.source.published[-1].vips == rig.dataplane.applied[-1].vips


def test_a_new_snapshot_is_applied_and_an_unchanged_one_costs_no_change() -> None:
    rig = Rig()
    rig.source.push(cluster(replicas_on=("node-1",)))

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        rig.source.push(cluster(replicas_on=("node-1", "node-3")))
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "second apply")
        rig.source.push(cluster(replicas_on=("node-1", "node-3")))
        await rig.until(lambda: len(rig.dataplane.applied) == 3, "third apply")

    asyncio.run(_with_daemon(rig, body))
    first, second, third = rig.dataplane.applied
    nodes = [local_nodes(d) for d in (first, second)]
    assert nodes == [{"node-1"}, {"node-1", "node-3"}]
    assert third.virtual_services == second.virtual_services
    # VIPs stay put across plans (one Planner for the config)
    assert [v.address for v in first.vips] == [v.address for v in third.vips]


def test_health_results_are_fed_back_into_the_plan() -> None:
    rig = Rig()
    rig.source.push(cluster())

    def weights(d: DesiredState) -> dict[str, int]:
        return {rs.node: rs.weight for vs in d.virtual_services if vs.service == "shop/web"
                for rs in vs.real_servers}  # fmt: skip

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        assert rig.health.targets, "targets derived from the plan"
        rig.health.set(("", "node-1"), True)  # a first verdict of up: no news
        rig.health.set(("", "node-2"), False)  # the node-wide (kube-proxy) check fails
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "re-plan after health")

    asyncio.run(_with_daemon(rig, body))
    before, after = (weights(d) for d in rig.dataplane.applied)
    assert before.get("node-2", 0) > 0
    assert after.get("node-2", 0) == 0
    # Told once, by the checker, when it happened: not again by each later sync.
    health = [e.message for e in rig.daemon.events if e.message.startswith("health:")]
    assert health == ["health: node node-2 is down: connection refused"]


def test_a_failed_apply_is_reported_and_retried_and_the_rest_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_loop, "RETRY_FIRST", 0.02)
    rig = Rig()
    rig.dataplane.fail = "nftables dataplane needs net.ipv4.ip_forward=0 set to 1"
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.daemon.last_sync is not None, "first sync")
        record = rig.daemon.last_sync
        assert record is not None and record.errors
        assert "ip_forward" in record.errors[0]
        assert "dns.update" in rig.journal and "speaker.set_vips" in rig.journal
        rig.dataplane.fail = None
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "retried apply")

    asyncio.run(_with_daemon(rig, body))
    assert rig.daemon.counters.syncs["error"] >= 1
    assert rig.daemon.counters.syncs["ok"] >= 1


def test_vrrp_is_told_what_this_host_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """ha.track: a dataplane that cannot be programmed, until an apply works; a source
    that says it is not connected, once that has lasted ha.track.source_after."""
    monkeypatch.setattr(daemon_loop, "RETRY_FIRST", 0.02)
    cfg = base_config()
    cfg = replace(cfg, ha=replace(cfg.ha, track=TrackConfig(source_after=0.2)))
    rig = Rig(cfg, tick=0.02)
    rig.dataplane.fail = "nft: Could not process rule: No such file or directory"
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: "dataplane" in rig.speaker.failing, "dataplane tracked")
        assert "No such file" in rig.speaker.failing["dataplane"]
        rig.dataplane.fail = None
        await rig.until(lambda: not rig.speaker.failing, "dataplane recovered")
        rig.source.connected = False
        await asyncio.sleep(0.1)
        assert not rig.speaker.failing  # not yet: source_after is 0.2 s
        await rig.until(lambda: "source" in rig.speaker.failing, "source tracked")
        assert "memory unreachable since" in rig.speaker.failing["source"]
        rig.source.connected = True
        await rig.until(lambda: not rig.speaker.failing, "source recovered")

    asyncio.run(_with_daemon(rig, body))
    tracked = [j for j in rig.journal if j.startswith("speaker.track")]
    assert tracked == [
        "speaker.track:dataplane", "speaker.track:", "speaker.track:source", "speaker.track:"
    ]  # fmt: skip


def test_a_failing_health_update_is_an_error_of_the_sync_not_the_end_of_the_daemon() -> None:
    rig = Rig()
    boom = RuntimeError("prober lost its socket")

    def update(targets: Iterable[Target]) -> None:
        raise boom

    rig.health.update = update  # type: ignore[method-assign]
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.daemon.last_sync is not None, "first sync")
        record = rig.daemon.last_sync
        assert record is not None and record.errors == ("health: prober lost its socket",)
        assert len(rig.dataplane.applied) == 1  # the plan still reached the kernel

    asyncio.run(_with_daemon(rig, body))


# --- reload --------------------------------------------------------------------------------


def test_reload_with_a_bad_config_keeps_the_running_one() -> None:
    def bad() -> Config:
        raise ConfigError(["appliance.yaml:3: pools[0].addresses[0]: not an address: 'x'"])

    rig = Rig(load_config=bad)
    rig.source.push(cluster())
    planner = rig.daemon.planner

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        assert rig.daemon.reload() is False

    asyncio.run(_with_daemon(rig, body))
    assert rig.daemon.config is rig.cfg
    assert rig.daemon.planner is planner
    assert rig.daemon.counters.reloads == {"refused": 1}
    assert any("reload refused" in e.message and "not an address" in e.message
               for e in rig.daemon.events)  # fmt: skip


def test_reload_with_a_good_config_replans_and_keeps_every_vip() -> None:
    cfg = base_config()
    # The new config puts a pool in front: a fresh Planner would allocate from it.
    newer = replace(cfg, pools=(pool("front", "198.18.50.64/28"), *cfg.pools))
    rig = Rig(cfg, load_config=lambda: newer)
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        assert rig.daemon.reload() is True
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "apply after reload")

    asyncio.run(_with_daemon(rig, body))
    assert rig.daemon.config is newer
    before, after = ({v.address for v in d.vips} for d in rig.dataplane.applied)
    assert before == after
    assert all(a.startswith("198.18.50.") and int(a.split(".")[3]) < 32 for a in after)


def test_reload_restarts_dns_with_new_zones_and_keeps_the_old_if_it_cannot_listen() -> None:
    cfg = base_config()
    configs = [
        replace(cfg, dns=DnsConfig(zones=("cluster.local", "k8s.example.com"))),
        replace(cfg, dns=DnsConfig(listen=(("198.18.50.9", 53),), zones=("other.example",))),
    ]
    rig = Rig(cfg, load_config=lambda: configs.pop(0))
    servers: list[MemoryDns] = []

    def make_dns(c: DnsConfig) -> MemoryDns:
        servers.append(MemoryDns(rig.journal, c))
        return servers[-1]

    rig.daemon.make_dns = make_dns
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        assert rig.daemon.reload()
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "apply after reload")
        assert rig.daemon.reload()
        await rig.until(lambda: len(rig.dataplane.applied) == 3, "apply after reload")

    asyncio.run(_with_daemon(rig, body))
    starts = [e for e in rig.journal if e.startswith(("dns.start", "dns.stop"))]
    assert starts == [
        "dns.start:cluster.local",  # the first server, from the Rig
        "dns.stop",
        "dns.start:cluster.local,k8s.example.com",
        "dns.stop",  # the new listen address fails: the previous config comes back
        "dns.start:cluster.local,k8s.example.com",
        "dns.stop",  # shutdown
    ]
    assert rig.daemon.parts.dns is servers[-1] and servers[-1].records
    assert any("DNS not reloaded" in e.message for e in rig.daemon.events)
    assert rig.daemon.restart_needed == ()


def test_a_pending_restart_is_remembered_across_reloads() -> None:
    cfg = base_config()
    web = replace(cfg, web=WebConfig(listen=("127.0.0.1", 9090)))
    configs = [web, replace(web, health=HealthConfig(interval=7.0))]
    rig = Rig(cfg, load_config=lambda: configs.pop(0))
    assert rig.daemon.reload() and rig.daemon.restart_needed == ("web",)
    assert rig.daemon.reload() and rig.daemon.restart_needed == ("web",)


# --- stopping ------------------------------------------------------------------------------


def test_stop_resigns_vrrp_and_removes_vips_before_anything_else() -> None:
    rig = Rig()
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.speaker.held != set(), "VIPs held")

    asyncio.run(_with_daemon(rig, body))
    tail = rig.journal[rig.journal.index("speaker.resign(priority=0)") :]
    assert tail[1].startswith("speaker.release:198.18.50.")
    assert tail.index("dns.stop") > 1 and tail.index("source.close") > 1
    assert rig.speaker.held == set()
    assert "dataplane.apply" not in tail  # the kernel's services stay for in-flight traffic


def test_stop_returns_within_its_budget_even_when_a_part_hangs() -> None:
    rig = Rig(hang=True)
    rig.source.push(cluster())

    async def main() -> None:
        task = asyncio.create_task(rig.daemon.run())
        await rig.until(lambda: rig.daemon.ready, "ready")
        rig.daemon.request_stop()
        await asyncio.wait_for(task, 10)  # the speaker would hang for an hour

    asyncio.run(main())
    # the hung speaker was abandoned, the rest still stopped in order
    assert "dns.stop" in rig.journal and "source.close" in rig.journal


# --- systemd notify ------------------------------------------------------------------------


def test_systemd_notify_ready_after_the_first_sync_watchdog_and_stopping() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})
        assert notifier.watchdog_interval == pytest.approx(0.02)
        rig = Rig(notifier=notifier)

        def received() -> list[str]:
            out = []
            while True:
                try:
                    out.append(sock.recv(4096).decode())
                except BlockingIOError:
                    return out

        got: list[str] = []

        async def body() -> None:
            await rig.until(lambda: len(notifier.sent) >= 2, "watchdog pings")
            got.extend(received())
            assert not any(m.startswith("READY=1") for m in got), "READY before any sync"
            rig.source.push(cluster())
            await rig.until(lambda: rig.daemon.ready, "ready")

        asyncio.run(_with_daemon(rig, body))
        got.extend(received())
        sock.close()
    assert "WATCHDOG=1" in got
    ready = [m for m in got if m.startswith("READY=1")]
    assert len(ready) == 1 and "STATUS=2 VIPs" in ready[0]
    assert got[-1] == "STOPPING=1"


def test_notifier_without_systemd_does_nothing() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.sent == []
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.address == "\0x" and other.watchdog_interval is None  # not our PID


# --- logs and the snapshot -----------------------------------------------------------------


def test_logs_are_one_json_object_per_line_from_structlog_and_stdlib() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("werkzeug").level)
    configure("info", stream=out)
    try:
        structlog.get_logger("appliance.daemon").info("synced", vips=3)
        logging.getLogger("appliance.dns.server").warning("dns: %s", "zone problem")
        logging.getLogger("appliance.x").debug("not shown at info")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("werkzeug").setLevel(saved[2])
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["event"], d["level"]) for d in lines] == [
        ("synced", "info"),
        ("dns: zone problem", "warning"),
    ]
    assert lines[0]["vips"] == 3 and lines[0]["timestamp"].endswith("Z")


def test_snapshot_names_the_owner_of_every_vip_and_the_down_backend() -> None:
    rig = Rig()
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        rig.health.set(("shop/echo", "node-1"), False)
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "re-plan")

    asyncio.run(_with_daemon(rig, body))
    s = to_json(snapshot.build(rig.daemon))
    json.dumps(s)  # JSON-ready
    assert s["host"] == "lb-test" and s["ready"]
    assert [i["state"] for i in s["vrrp"]] == ["initialize"]  # stopped by now
    owners = {v["address"]: v["owner"] for v in s["vips"]}
    assert set(owners) == {v.address for v in rig.dataplane.applied[-1].vips}
    echo = next(x for x in s["services"] if x["key"] == "shop/echo")
    assert echo["policy"] == "Local"
    health = {r["node"]: r["health"] for p in echo["ports"] for r in p["real_servers"]}
    assert health["node-1"] == "down"
    assert s["sync"]["count"] >= 2 and s["events"][0]["time"] >= s["events"][-1]["time"]


def test_instance_vips_match_what_the_snapshot_expects() -> None:
    # The page's owner column relies on the speaker's grouping of VIPs per instance.
    from appliance.config import VrrpInstance

    inst = VrrpInstance("vi-1", 51, pools=("default",))
    vips = [Vip("198.18.50.17", "default", ("shop/web",)), Vip("198.18.50.99", "other", ())]
    assert instance_vips(inst, vips) == ("198.18.50.17",)


def test_snapshots_rebuild_the_big_parts_only_when_plan_or_verdicts_change() -> None:
    rig = Rig()
    rig.source.push(cluster())
    snaps = snapshot.Snapshots(rig.daemon)
    seen: list[Status] = []

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        seen.extend((snaps.build(), snaps.build()))
        rig.health.set(("shop/echo", "node-1"), False)
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "re-plan")
        seen.append(snaps.build())

    asyncio.run(_with_daemon(rig, body))
    first, again, after = seen
    assert again.services is first.services  # nothing changed: reused
    assert after.services is not first.services
    assert after.services == snapshot.build(rig.daemon).services
    assert after.services != first.services


# --- active connections --------------------------------------------------------------------


def _active(snap: Status, service: str) -> dict[str, int | None]:
    return {
        r["node"]: r["active_connections"]
        for svc in to_json(snap)["services"]
        if svc["key"] == service
        for p in svc["ports"]
        for r in p["real_servers"]
    }


def test_active_connections_are_read_now_and_then_and_reach_the_snapshot() -> None:
    rig = Rig(connections_every=0.02)
    rig.source.push(cluster())
    rig.dataplane.active = {"node-1": 3}
    snaps: list[Status] = []

    async def body() -> None:
        await rig.until(lambda: rig.dataplane.applied != [], "first apply")
        await rig.until(lambda: bool(rig.daemon.connections), "a read after the apply")
        snaps.append(snapshot.build(rig.daemon))
        rig.dataplane.active = {"node-1": 1, "node-2": 7}
        await rig.until(lambda: _active(snapshot.build(rig.daemon), "shop/web")["node-2"] == 7,
                        "the next read")  # fmt: skip

    asyncio.run(_with_daemon(rig, body))
    assert _active(snaps[0], "shop/web") == {"node-1": 3, "node-2": 0, "node-3": 0}
    assert to_json(snaps[0])["dataplane"]["connections_time"] is not None
    assert rig.dataplane.reads >= 2
    # a read is no sync: the loop planned once for the one snapshot
    assert len(rig.dataplane.applied) == 1


def test_a_slow_connections_read_never_holds_up_a_sync() -> None:
    rig = Rig(connections_every=0.01)
    gate = asyncio.Event()
    rig.dataplane.hold_reads = gate
    rig.source.push(cluster(replicas_on=("node-1",)))

    async def body() -> None:
        await rig.until(lambda: rig.dataplane.reads == 1, "a read under way")
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        rig.source.push(cluster(replicas_on=("node-1", "node-3")))
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "second apply")
        assert rig.dataplane.reads == 1  # still the one read, still waiting
        assert _active(snapshot.build(rig.daemon), "shop/echo") == {"node-1": None,
                                                                   "node-3": None}  # fmt: skip
        gate.set()
        await rig.until(lambda: bool(rig.daemon.connections), "the read done")

    asyncio.run(_with_daemon(rig, body))


def test_a_failing_connections_read_is_logged_and_the_daemon_goes_on() -> None:
    rig = Rig(connections_every=0.01)
    rig.dataplane.broken_reads = True
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.dataplane.reads >= 3, "reads keep coming")
        await rig.until(lambda: rig.daemon.ready, "first sync")

    asyncio.run(_with_daemon(rig, body))
    assert rig.daemon.connections == {}
    assert not (rig.daemon.last_sync and rig.daemon.last_sync.errors)

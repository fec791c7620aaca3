"""The status as the outside sees it, byte for byte: `/api/v1/state` (the JSON API other
tools read), the page and `/metrics`, for one daemon state with a bit of everything:
two VRRP instances (master and backup) and a VIP no instance owns, tracking and a
resignation, services with healthy, failing, unchecked and draining real servers,
connections, source ranges, affinity, problems and refusals, a saved plan being served,
the snapshot writer, DNS, events and counters.

The daemon is a real `Daemon` whose parts answer with fixed values and whose state is set
by hand: no loop runs, so nothing here depends on timing. The clock and the time zone are
pinned."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance.commands.daemon import overview
from appliance.config import (
    Config,
    HaConfig,
    HealthConfig,
    TrackConfig,
    TrackInterface,
    VrrpInstance,
)
from appliance.daemon import snapshot
from appliance.daemon.events import Event, SyncRecord
from appliance.daemon.loop import Daemon
from appliance.daemon.parts import Parts
from appliance.daemon.resign import Resignations
from appliance.daemon.statestore import SnapshotStore
from appliance.dataplane.base import ApplyReport
from appliance.dns.server import DnsStats
from appliance.ha.status import HaStatus, InstanceStatus
from appliance.health.checker import TargetStatus
from appliance.health.targets import Target
from appliance.model import ANN_ADDRESS_POOL, ClusterState, Problem, Refusal, ServicePort
from appliance.plan.planner import plan
from appliance.plan.snapshotfile import SavedState
from appliance.web.app import StateHolder, create_app
from appliance.web.metrics import make_registry
from tests.golden import assert_golden
from tests.unit.builders import config as make_config
from tests.unit.builders import ep, lb, pool, slice_, state

GOLDEN = Path(__file__).parent / "golden" / "web"
NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


class FixedSource:
    kind = "kube"

    def status(self) -> Mapping[str, Any]:
        return {
            "kind": "kube",
            "connected": False,
            "writer": True,
            "lease_error": "",
            "events_sent": 4,
            "events_dropped": 0,
            "resources": [
                {"kind": "Service", "synced": True, "watching": False, "relists": 2,
                 "failures": 3, "last_error": "connection refused"},
                {"kind": "EndpointSlice", "synced": True, "watching": False, "relists": 1,
                 "failures": 3, "last_error": "connection refused"},
            ],
        }  # fmt: skip


class FixedDataplane:
    name = "ipvs"


class FixedSpeaker:
    on_change: Any = None

    def __init__(self, v4: tuple[str, ...], v6: tuple[str, ...]) -> None:
        self.v4, self.v6 = v4, v6

    def status(self) -> HaStatus:
        master = InstanceStatus(
            "vi-4", 51, "IPv4", "master", NOW - 120, "master down timer", "198.18.0.1", 50,
            1.0, 3, 240, {"not_a_peer": 2}, self.v4, self.v4, ("198.18.0.2",), 1, 100,
        )  # fmt: skip
        backup = InstanceStatus(
            "vi-6", 52, "IPv6", "backup", NOW - 30, "resigned", "fe80::2", 0, 1.0, 90, 1,
            {}, self.v6, (), (), 0, 100,
        )  # fmt: skip
        return HaStatus(
            "eth1", (master, backup), {"unknown_vrid": 5}, garps_sent=10,
            failing={"interface eth2": "eth2 is down"},
        )  # fmt: skip


class FixedDns:
    def stats(self) -> DnsStats:
        return DnsStats(
            7, 9, ("cluster.local",), {"NOERROR": 10, "NXDOMAIN": 2, "REFUSED": 0}, 11, 1,
            ("shop/odd: no address",), 0, ("127.0.0.1:5353", "127.0.0.1:5353"),
        )  # fmt: skip


def _target(service: str, node: str, address: str, kind: Any = "kube-proxy") -> Target:
    return Target(service, node, kind, address, 32001, 2.0, 1.0, 2, 3, path="/healthz")


class FixedHealth:
    on_change: Any = None
    on_transition: Any = None
    checks = 12

    def __init__(self) -> None:
        self.results = Counter({"ok": 9, "failed": 3})

    def statuses(self) -> tuple[TargetStatus, ...]:
        down = _target("shop/echo", "node-1", "198.18.0.11")
        up = _target("shop/echo", "node-2", "198.18.0.12")
        node = _target("", "node-3", "198.18.0.13", "kube-proxy-node")
        return (
            TargetStatus(down, "down", NOW - 40, NOW - 1, False, "connection refused", None, 7, 2),
            TargetStatus(up, "up", NOW - 300, NOW - 1, True, "", 0.002, 7, 1),
            TargetStatus(node, "unknown", NOW - 2, None, None, "", None, 0, 0),
        )


def _config() -> Config:
    base = make_config(
        pool("default", "198.18.50.16/28"),
        pool("v6", "fd00:198:18:50::10/124"),
        pool("lab", "198.18.60.0/28"),
    )
    ha = HaConfig(
        interface="eth1",
        instances=(
            VrrpInstance("vi-4", 51, pools=("default",), peers=("198.18.0.2",)),
            VrrpInstance("vi-6", 52, family="IPv6", pools=("v6",)),
        ),
        track=TrackConfig(interfaces=(TrackInterface("eth2", -30), TrackInterface("eth3"))),
    )
    return replace(base, ha=ha, health=HealthConfig(interval=2.0))


def _cluster() -> ClusterState:
    nodes = ("node-1", "node-2", "node-3")
    eps = [ep(f"198.18.64.{10 + i}", n) for i, n in enumerate(nodes)]
    two_ports = (
        ServicePort("http", "TCP", 80, 8080, 30080),
        ServicePort("dns", "UDP", 53, 53, 30053),
    )
    services = (
        lb("web", ports=two_ports),
        lb("echo", age=1, external_traffic_policy="Local", health_check_node_port=32001),
        lb("sticky", age=2, session_affinity="ClientIP", session_affinity_timeout=600,
           load_balancer_source_ranges=("198.18.0.0/24",),
           annotations={ANN_ADDRESS_POOL: "lab"}),
        lb("dual", age=3, ip_families=("IPv6",), ip_family_policy="SingleStack",
           ),
        lb("wants", age=4, load_balancer_ip="198.18.99.1"),
    )  # fmt: skip
    slices = tuple(slice_(s.name, *eps) for s in services)
    refused = (Refusal("Service", "shop", "", "metadata.name missing", "shop.yaml"),)
    return replace(state(*services, slices=slices), refused=refused)


@pytest.fixture()
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    monkeypatch.setattr(time, "time", lambda: NOW)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    cfg = _config()
    cluster = _cluster()
    desired = plan(cluster, cfg, health={("shop/echo", "node-1"): False})
    v4 = tuple(v.address for v in desired.vips if v.pool == "default")
    v6 = tuple(v.address for v in desired.vips if v.pool == "v6")
    parts = Parts(FixedSource(), FixedDataplane(), FixedSpeaker(v4, v6), FixedDns(), FixedHealth())  # type: ignore[arg-type]  # fmt: skip
    resignations = Resignations(None, ["vi-4", "vi-6"])
    resignations.resign("vi-6", 600, NOW - 30)
    store = SnapshotStore("/var/lib/appliance/last-state.json")
    store.writes.update({"ok": 3, "skipped": 5})
    store.last_write_at, store.last_write_seconds, store.last_write_bytes = NOW - 20, 0.0125, 4096
    d = Daemon(cfg, parts, host="lb-a", resignations=resignations, snapshots=store)
    d.started = NOW - 3600
    d.ready = True
    d.restart_needed = ("dns",)
    d.saved = SavedState(cluster, NOW - 7200)
    d.desired = desired
    web = next(vs for vs in desired.virtual_services if vs.service == "shop/web")
    d.report = ApplyReport(
        "ipvs", added=("tcp 198.18.50.16:80",), seconds=0.004,
        draining=(f"{web.protocol.lower()} {web.vip}:{web.port} 198.18.0.14:{web.real_port}",),
    )  # fmt: skip
    d.last_sync = SyncRecord(NOW - 5, 0.0042, True, "5 services, 6 VIPs", ("dns: zone problem",))
    d.connections = {web.key: {rs.address: 3 * i for i, rs in enumerate(web.real_servers)}}
    d.connections_at = NOW - 4
    d.health_problems = (Problem("Service", "shop/echo", "node-3: health check not answered"),)
    d.events = deque(
        [Event(NOW - 3000, "info", "first sync"), Event(NOW - 60, "warning", "VRRP vi-6: resigned"),
         Event(NOW - 5, "error", "dns: zone problem")]
    )  # fmt: skip
    d.counters.syncs.update({"ok": 41, "error": 1})
    d.counters.reloads.update({"ok": 1, "refused": 1})
    transitions = {("vi-4", "master"): 2, ("vi-4", "backup"): 1, ("vi-6", "backup"): 1}
    d.counters.vrrp_transitions.update(transitions)
    d.counters.source_restarts = 1
    yield d
    monkeypatch.undo()
    time.tzset()


def _client(d: Daemon) -> Any:
    holder = StateHolder()
    holder.set(snapshot.build(d))
    registry, histogram = make_registry(holder.get)
    histogram.observe(0.0042)
    return create_app(holder, registry).test_client()


def test_api_state_is_byte_for_byte_the_golden_file(daemon: Daemon) -> None:
    body = _client(daemon).get("/api/v1/state").get_data(as_text=True)
    assert_golden(GOLDEN / "api_state.json", body)


def test_page_is_the_golden_file(daemon: Daemon) -> None:
    assert_golden(GOLDEN / "page.html", _client(daemon).get("/").get_data(as_text=True))


def test_metrics_are_the_golden_file(daemon: Daemon) -> None:
    assert_golden(GOLDEN / "metrics.txt", _client(daemon).get("/metrics").get_data(as_text=True))


def test_status_overview_is_the_golden_file(daemon: Daemon) -> None:
    state = json.loads(_client(daemon).get("/api/v1/state").get_data(as_text=True))
    assert_golden(GOLDEN / "overview.txt", overview(state))


def test_before_the_first_snapshot_the_api_page_and_metrics_are_the_golden_files(
    daemon: Daemon,
) -> None:
    registry, _ = make_registry((holder := StateHolder()).get)
    c = create_app(holder, registry).test_client()
    assert_golden(GOLDEN / "api_state_empty.json", c.get("/api/v1/state").get_data(as_text=True))
    assert_golden(GOLDEN / "page_empty.html", c.get("/").get_data(as_text=True))
    assert_golden(GOLDEN / "metrics_empty.txt", c.get("/metrics").get_data(as_text=True))

"""nftables backend against real traffic: client -> VIP on the LB -> NodePorts on nodes.

The observers are the node servers themselves (each answers with its name), the client's
sockets and `nft list`; the backend under test never reports on its own success.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest
from adp_lab import CLIENT6, CLIENTS, LB, NODES, NODES6, Lab, in_ns

from appliance.config import DataplaneConfig
from appliance.dataplane.base import ApplyReport, DataplaneError
from appliance.dataplane.nft import NftablesBackend
from appliance.model import DesiredState, RealServer, VirtualService
from appliance.plan import plan
from tests.unit.builders import config, ep, lb, node, pool, slice_
from tests.unit.builders import state as cluster_state

pytestmark = pytest.mark.root
TABLE = "adp_test"
VIP = "198.18.32.1"
RS = tuple(RealServer(n, a) for n, a in NODES.items())


def state(*services: VirtualService) -> DesiredState:
    return DesiredState({}, tuple(services), (), (), (), ())


def web(**kw: object) -> VirtualService:
    base = VirtualService(VIP, 80, "TCP", "rr", 30080, RS, "default/web")
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backend(lab: Lab) -> NftablesBackend:
    return NftablesBackend(DataplaneConfig(backend="nftables"), table=TABLE, netns=LB)


def apply(backend: NftablesBackend, *services: VirtualService) -> ApplyReport:
    return asyncio.run(backend.apply(state(*services)))


def listing() -> str:
    return in_ns(LB, "nft", "list", "table", "inet", TABLE).stdout


def test_round_robin_spreads_evenly(lab: Lab, backend: NftablesBackend) -> None:
    apply(backend, web())
    got = lab.spread(VIP, 80, 30)
    assert set(got) == set(NODES), got
    assert all(n == 10 for n in got.values()), got  # numgen inc is exact round robin


def test_weights(lab: Lab, backend: NftablesBackend) -> None:
    rss = (replace(RS[0], weight=3), RS[1], replace(RS[2], weight=0))
    report = apply(backend, web(scheduler="wrr", real_servers=rss))
    assert report.changed and not report.full_replace
    got = lab.spread(VIP, 80, 40)
    assert got == Counter({"node1": 30, "node2": 10}), got


def test_client_ip_affinity_until_timeout(lab: Lab, backend: NftablesBackend) -> None:
    apply(backend, web(persistence_timeout=3))
    (back,) = asyncio.run(backend.current())  # read back from the kernel
    assert back.persistence_timeout == 3 and len(back.real_servers) == 3, back
    for client in CLIENTS:
        got = lab.spread(VIP, 80, 8, src=client)
        assert len(got) == 1, f"{client} moved between nodes: {got}"
    aff = in_ns(
        LB,
        "nft",
        "list",
        "set",
        "inet",
        TABLE,
        f"aff-tcp-{VIP}-80-{NODES[next(iter(lab.spread(VIP, 80, 1)))]}",
    ).stdout
    assert CLIENTS[0] in aff
    time.sleep(3.5)
    sets = in_ns(LB, "nft", "list", "sets", "inet").stdout
    assert not any(c in sets for c in CLIENTS), "affinity outlived its timeout"


def test_source_ranges_drop_others(lab: Lab, backend: NftablesBackend) -> None:
    apply(backend, web(source_ranges=(f"{CLIENTS[0]}/32", "198.18.29.0/24")))
    assert lab.ask(f"tcp {CLIENTS[0]} {VIP} 80") in NODES
    assert lab.ask(f"tcp {CLIENTS[1]} {VIP} 80").startswith("ERR")
    apply(backend, web(source_ranges=()))  # ranges given, none of this family: nobody
    assert lab.ask(f"tcp {CLIENTS[0]} {VIP} 80").startswith("ERR")


def test_local_policy_only_nodes_with_endpoints(lab: Lab, backend: NftablesBackend) -> None:
    # plan() gives Local services only the nodes that run an endpoint: node1 and node3.
    apply(backend, web(traffic_policy="Local", real_servers=(RS[0], RS[2])))
    got = lab.spread(VIP, 80, 12)
    assert got == Counter({"node1": 6, "node3": 6}), got


def test_local_weights_from_the_plan_split_new_connections_by_pods(
    lab: Lab, backend: NftablesBackend
) -> None:
    """plan() with the config's default scheduler: node1 runs two ready pods, node3 one;
    300 new connections land 2:1, counted by the node servers that answer them."""
    svc = lb("web", external_traffic_policy="Local")
    pods = slice_("web", ep("10.0.0.1", "node1"), ep("10.0.0.2", "node1"), ep("10.0.0.3", "node3"))
    nodes = [node(name, address) for name, address in NODES.items()]
    cluster = cluster_state(svc, slices=[pods], nodes=nodes)
    planned = plan(cluster, config(pool("lab", f"{VIP}/32")))
    (vs,) = planned.virtual_services
    assert vs.scheduler == "wrr", vs  # rr, the default, ignores the weights Local sets
    apply(backend, web(scheduler=vs.scheduler, real_servers=vs.real_servers))
    got = lab.spread(VIP, 80, 300)
    assert got["node2"] == 0, got
    assert abs(got["node1"] - 200) <= 15 and abs(got["node3"] - 100) <= 15, got


def test_graceful_drain_keeps_open_connection(lab: Lab, backend: NftablesBackend) -> None:
    apply(backend, web())
    first = lab.ask(f"open c1 {CLIENTS[0]} {VIP} 80")
    assert first in NODES
    rest = tuple(rs for rs in RS if rs.node != first)
    report = apply(backend, web(real_servers=rest))
    assert report.changed and not report.full_replace
    assert lab.ask("send c1") == first  # the open connection still reaches the removed node
    assert first not in lab.spread(VIP, 80, 10)
    assert lab.ask("close c1") == "ok"


def test_udp_and_stale_conntrack_forgotten(lab: Lab, backend: NftablesBackend) -> None:
    dns = VirtualService(VIP, 53, "UDP", "rr", 30053, RS, "default/dns")
    apply(backend, dns)
    # One client flow (fixed source port) sticks to its node through conntrack...
    pinned = {lab.ask(f"udp {CLIENTS[2]} 40053 {VIP} 53") for _ in range(4)}
    assert len(pinned) == 1 and pinned <= set(NODES), pinned
    node = pinned.pop()
    # ...until that node leaves: its stale UDP entries are deleted, the flow moves.
    apply(backend, replace(dns, real_servers=tuple(rs for rs in RS if rs.node != node)))
    after = lab.ask(f"udp {CLIENTS[2]} 40053 {VIP} 53")
    assert after in NODES and after != node
    # fresh flows spread over what is left
    got = Counter(lab.ask(f"udp {CLIENTS[0]} {41000 + i} {VIP} 53") for i in range(6))
    assert set(got) == set(NODES) - {node}, got


def test_ipv6(lab: Lab, backend: NftablesBackend) -> None:
    vip6 = "fd00:198:18:32::1"
    rss = tuple(RealServer(n, a) for n, a in NODES6.items())
    apply(backend, VirtualService(vip6, 80, "TCP", "rr", 30080, rss, "default/web6"))
    got = Counter(lab.ask(f"tcp {CLIENT6} {vip6} 80") for _ in range(6))
    assert got == Counter(dict.fromkeys(NODES, 2)), got


def test_unchanged_reapply_is_byte_identical(lab: Lab, backend: NftablesBackend) -> None:
    services = (web(), web(port=81, real_port=30081, scheduler="sh"))
    apply(backend, *services)
    before = listing()
    again = apply(backend, *services)
    assert again.unchanged
    assert listing() == before
    # A new process (cold start) recognises the table it would load and sends nothing.
    fresh = NftablesBackend(table=TABLE, netns=LB)
    cold = asyncio.run(fresh.apply(state(*services)))
    assert listing() == before
    assert not cold.full_replace and cold.kernel_calls == 0
    # source hashing with a fixed seed: the same client keeps its node across reloads
    assert len(lab.spread(VIP, 81, 5)) == 1


def test_one_endpoint_change_and_read_back(lab: Lab, backend: NftablesBackend) -> None:
    apply(backend, web())
    moved = (RS[0], RS[1], RealServer("node3", NODES["node3"], weight=1))
    report = apply(backend, web(real_servers=moved, port=80), web(port=82, real_port=30082))
    assert report.added == (f"tcp {VIP}:82",) and not report.full_replace
    current = asyncio.run(backend.current())
    by_port = {vs.port: vs for vs in current}
    assert set(by_port) == {80, 82}
    assert {rs.address for rs in by_port[82].real_servers} == set(NODES.values())
    assert by_port[82].real_port == 30082
    assert lab.spread(VIP, 82, 3) == Counter(dict.fromkeys(NODES, 1))


def test_missing_forwarding_sysctl_is_one_clear_error(lab: Lab) -> None:
    in_ns(LB, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    try:
        b = NftablesBackend(table="adp_other", netns=LB)
        with pytest.raises(DataplaneError, match=r"net\.ipv4\.ip_forward=0.*sysctl -w"):
            asyncio.run(b.apply(state(web())))
    finally:
        in_ns(LB, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    assert "adp_other" not in in_ns(LB, "nft", "list", "tables").stdout


def _established(vip: str, port: int, node: str) -> int:
    """The independent count: conntrack's own filters, no parsing of ours."""
    out = in_ns(
        LB,
        "conntrack", "-L", "-p", "tcp", "--orig-dst", vip, "--dport", str(port),
        "--reply-src", node, "--state", "ESTABLISHED",
        check=False,
    ).stdout  # fmt: skip
    return len(out.splitlines())


def _settle(read: Callable[[], dict[str, int]], want: dict[str, int]) -> dict[str, int]:
    """A closed connection leaves ESTABLISHED when the FINs pass: a moment, not a timing."""
    got = read()
    for _ in range(50):
        if got == want:
            break
        time.sleep(0.05)
        got = read()
    return got


def test_active_connections_per_node_from_conntrack(lab: Lab, backend: NftablesBackend) -> None:
    vip = "198.18.32.3"  # no earlier test's flows
    dns = VirtualService(vip, 53, "UDP", "rr", 30053, RS, "default/dns")
    apply(backend, web(vip=vip), dns)

    def tcp() -> dict[str, int]:
        return dict(asyncio.run(backend.connections())[(vip, 80, "TCP")])

    idle = dict.fromkeys(NODES.values(), 0)
    assert tcp() == idle
    node = lab.ask(f"open held {CLIENTS[0]} {vip} 80")
    assert node in NODES, node
    held = {a: int(n == node) for n, a in NODES.items()}
    assert tcp() == held
    assert {a: _established(vip, 80, a) for a in NODES.values()} == held
    # a UDP flow counts while its conntrack entry lives, whatever its state
    udp_node = lab.ask(f"udp {CLIENTS[1]} 40153 {vip} 53")
    assert udp_node in NODES, udp_node
    udp = dict(asyncio.run(backend.connections())[(vip, 53, "UDP")])
    assert udp == {a: int(n == udp_node) for n, a in NODES.items()}
    assert lab.ask("close held") == "ok"
    assert _settle(tcp, idle) == idle
    assert _established(vip, 80, NODES[node]) == 0

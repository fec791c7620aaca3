"""IPVS scenarios, run INSIDE the VM by tests/vm/test_ipvs_vm.py (one boot, one session).

Not collected on the host (the name does not start with test_). Same lab as the nftables
suite; observers: the node servers' names, the client's sockets and `ipvsadm -Ln`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "netns" / "dataplane"))

from adp_lab import CLIENT6, CLIENTS, LB, NODES, NODES6, Lab, in_ns

from appliance.config import DataplaneConfig, Pool
from appliance.dataplane.base import ApplyReport, Ownership
from appliance.dataplane.ipvs import IpvsBackend
from appliance.model import DesiredState, RealServer, VirtualService

VIP = "198.18.32.1"
RS = tuple(RealServer(n, a) for n, a in NODES.items())
POOL = Pool(
    "lab",
    (
        (ipaddress.IPv4Address("198.18.32.0"), ipaddress.IPv4Address("198.18.32.255")),
        (ipaddress.IPv6Address("fd00:198:18:32::"), ipaddress.IPv6Address("fd00:198:18:32::ff")),
    ),
)


def state(*services: VirtualService) -> DesiredState:
    return DesiredState({}, tuple(services), (), (), (), ())


def web(**kw: object) -> VirtualService:
    return replace(VirtualService(VIP, 80, "TCP", "rr", 30080, RS, "default/web"), **kw)  # type: ignore[arg-type]


def ipvsadm(*args: str) -> str:
    return in_ns(LB, "ipvsadm", *args).stdout


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["modprobe", "sctp"], check=True)  # before the node servers start
    lab = Lab()
    try:
        lab.up()
        for name in ("conntrack", "expire_nodest_conn", "expire_quiescent_template"):
            in_ns(LB, "sysctl", "-qw", f"net.ipv4.vs.{name}=1")
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="session")
def backend(lab: Lab) -> Iterator[IpvsBackend]:
    b = IpvsBackend(
        DataplaneConfig(backend="ipvs", drain_timeout=30), Ownership.of_pools([POOL]), netns=LB
    )
    try:
        yield b
    finally:
        b.close()


def apply(backend: IpvsBackend, *services: VirtualService) -> ApplyReport:
    return asyncio.run(backend.apply(state(*services)))


def test_round_robin_nat_to_nodes_without_default_route(lab: Lab, backend: IpvsBackend) -> None:
    apply(backend, web())
    table = ipvsadm("-Ln")
    assert f"TCP  {VIP}:80 rr" in table, table
    assert table.count("Masq") == 3, table
    got = lab.spread(VIP, 80, 30)
    assert got == Counter(dict.fromkeys(NODES, 10)), got


def test_weights(lab: Lab, backend: IpvsBackend) -> None:
    rss = (replace(RS[0], weight=3), RS[1], RS[2])
    report = apply(backend, web(scheduler="wrr", real_servers=rss))
    assert report.changed
    assert f"TCP  {VIP}:80 wrr" in ipvsadm("-Ln")
    got = lab.spread(VIP, 80, 50)
    assert got == Counter({"node1": 30, "node2": 10, "node3": 10}), got


def test_persistence_keeps_client_on_one_node(lab: Lab, backend: IpvsBackend) -> None:
    apply(backend, web(persistence_timeout=60))
    assert "persistent 60" in ipvsadm("-Ln")
    for client in CLIENTS:
        got = lab.spread(VIP, 80, 6, src=client)
        assert len(got) == 1, f"{client}: {got}"


def test_source_ranges_drop_others(lab: Lab, backend: IpvsBackend) -> None:
    apply(backend, web(source_ranges=(f"{CLIENTS[0]}/32", "198.18.29.0/24")))
    assert lab.ask(f"tcp {CLIENTS[0]} {VIP} 80") in NODES
    assert lab.ask(f"tcp {CLIENTS[1]} {VIP} 80").startswith("ERR")
    apply(backend, web(source_ranges=()))  # ranges given, none of this family: nobody
    assert lab.ask(f"tcp {CLIENTS[0]} {VIP} 80").startswith("ERR")
    apply(backend, web())
    assert lab.ask(f"tcp {CLIENTS[1]} {VIP} 80") in NODES


def test_graceful_drain(lab: Lab, backend: IpvsBackend) -> None:
    apply(backend, web())
    first = lab.ask(f"open c1 {CLIENTS[0]} {VIP} 80")
    assert first in NODES
    rest = tuple(rs for rs in RS if rs.node != first)
    report = apply(backend, web(real_servers=rest))
    assert report.draining, report
    line = [x for x in ipvsadm("-Ln").splitlines() if NODES[first] in x]
    assert line and line[0].split()[3] == "0", line  # weight 0, still there
    assert lab.ask("send c1") == first
    assert first not in lab.spread(VIP, 80, 8)
    again = apply(backend, web(real_servers=rest))  # still an active connection: stays
    assert NODES[first] in ipvsadm("-Ln") and again.draining
    assert lab.ask("close c1") == "ok"
    time.sleep(0.5)
    done = apply(backend, web(real_servers=rest))
    assert NODES[first] not in ipvsadm("-Ln"), (done, ipvsadm("-Ln"))
    assert backend.pending_drains() == 0


def test_local_policy_only_nodes_with_endpoints(lab: Lab, backend: IpvsBackend) -> None:
    # plan() gives Local services only the nodes that run an endpoint: node1 and node3.
    apply(backend, web(traffic_policy="Local", real_servers=(RS[0], RS[2])))
    got = lab.spread(VIP, 80, 12)
    assert got == Counter({"node1": 6, "node3": 6}), got


def test_drain_timeout_removes_even_with_open_connection(lab: Lab) -> None:
    b = IpvsBackend(DataplaneConfig(drain_timeout=1.0), Ownership.of_pools([POOL]), netns=LB)
    try:
        asyncio.run(b.apply(state(web())))
        first = lab.ask(f"open c2 {CLIENTS[1]} {VIP} 80")
        rest = tuple(rs for rs in RS if rs.node != first)
        asyncio.run(b.apply(state(web(real_servers=rest))))
        asyncio.run(b.apply(state(web(real_servers=rest))))
        assert NODES[first] in ipvsadm("-Ln")  # still draining: a connection is open
        time.sleep(1.2)
        asyncio.run(b.apply(state(web(real_servers=rest))))
        assert NODES[first] not in ipvsadm("-Ln")
        assert b.pending_drains() == 0
    finally:
        lab.ask("close c2")
        b.close()


def test_udp_flow_moves_when_its_node_leaves(lab: Lab, backend: IpvsBackend) -> None:
    dns = VirtualService(VIP, 53, "UDP", "rr", 30053, RS, "default/dns")
    apply(backend, dns)
    pinned = {lab.ask(f"udp {CLIENTS[2]} 40053 {VIP} 53") for _ in range(3)}
    assert len(pinned) == 1 and pinned <= set(NODES), pinned
    node = pinned.pop()
    rest = replace(dns, real_servers=tuple(rs for rs in RS if rs.node != node))
    apply(backend, rest)  # weight 0: UDP has no active connections...
    apply(backend, rest)  # ...so the next pass deletes it
    assert NODES[node] not in ipvsadm("-Ln")
    # expire_nodest_conn: the first datagram may go down with the old entry, then it moves
    answers = [lab.ask(f"udp {CLIENTS[2]} 40053 {VIP} 53") for _ in range(3)]
    assert answers[-1] in NODES and answers[-1] != node, answers


def test_sctp(lab: Lab, backend: IpvsBackend) -> None:
    sctp = VirtualService(VIP, 9000, "SCTP", "rr", 30090, RS, "default/sctp")
    apply(backend, sctp)
    assert f"SCTP {VIP}:9000 rr" in ipvsadm("-Ln"), ipvsadm("-Ln")
    got = Counter(lab.ask(f"sctp {CLIENTS[0]} {VIP} 9000") for _ in range(6))
    assert got == Counter(dict.fromkeys(NODES, 2)), got


def test_udp_and_ipv6(lab: Lab, backend: IpvsBackend) -> None:
    dns = VirtualService(VIP, 53, "UDP", "rr", 30053, RS, "default/dns")
    vip6 = "fd00:198:18:32::1"
    web6 = VirtualService(
        vip6, 80, "TCP", "rr", 30080, tuple(RealServer(n, a) for n, a in NODES6.items()), "d/w6"
    )
    sticky6 = replace(web6, port=81, real_port=30081, persistence_timeout=60)
    apply(backend, web(), dns, web6, sticky6)
    table = ipvsadm("-Ln")
    # ipvsadm shows a mask only when it is not the full one; a wrong IPv6 netmask
    # encoding would have been refused outright (the kernel wants 1..128).
    assert f"TCP  [{vip6}]:81 rr persistent 60\n" in table, table
    assert len(Counter(lab.ask(f"tcp {CLIENT6} {vip6} 81") for _ in range(4))) == 1
    got = Counter(lab.ask(f"udp {CLIENTS[0]} {42000 + i} {VIP} 53") for i in range(6))
    assert got == Counter(dict.fromkeys(NODES, 2)), got
    got6 = Counter(lab.ask(f"tcp {CLIENT6} {vip6} 80") for _ in range(6))
    assert got6 == Counter(dict.fromkeys(NODES, 2)), got6


def test_missing_ipvs_conntrack_sysctl_is_one_clear_error(lab: Lab) -> None:
    from appliance.dataplane.base import DataplaneError

    in_ns(LB, "sysctl", "-qw", "net.ipv4.vs.conntrack=0")
    b = IpvsBackend(DataplaneConfig(), Ownership.of_pools([POOL]), netns=LB)
    try:
        with pytest.raises(DataplaneError, match=r"net\.ipv4\.vs\.conntrack=0.*sysctl -w"):
            asyncio.run(b.apply(state(web())))
    finally:
        b.close()
        in_ns(LB, "sysctl", "-qw", "net.ipv4.vs.conntrack=1")


def test_unchanged_reapply_and_foreign_services_untouched(lab: Lab, backend: IpvsBackend) -> None:
    in_ns(LB, "ipvsadm", "-A", "-t", "198.18.99.9:80", "-s", "rr")  # not in our pools
    services = (web(), web(port=81, real_port=30081, scheduler="sh"))
    apply(backend, *services)
    before = ipvsadm("-Ln")
    again = apply(backend, *services)
    assert again.unchanged, again
    fresh = IpvsBackend(DataplaneConfig(), Ownership.of_pools([POOL]), netns=LB)
    try:
        cold = asyncio.run(fresh.apply(state(*services)))
        assert not (cold.added or cold.changed or cold.removed), cold
        current = asyncio.run(fresh.current())
    finally:
        fresh.close()
    assert ipvsadm("-Ln") == before
    assert "198.18.99.9:80" in before
    assert {(vs.port, vs.scheduler) for vs in current} == {(80, "rr"), (81, "sh")}


def _active_conn(vip: str, port: int, node: str) -> int:
    """ipvsadm's ActiveConn column for one destination: the independent observer."""
    for line in ipvsadm("-Ln", "-t", f"{vip}:{port}").splitlines():
        words = line.split()  # -> 198.18.31.2:30080 Masq 1 0 0
        if len(words) == 6 and words[0] == "->" and words[1] == f"{node}:30080":
            return int(words[4])
    raise AssertionError(f"{node} not in ipvsadm -Ln -t {vip}:{port}")


def test_active_connections_are_ipvsadm_activeconn(lab: Lab, backend: IpvsBackend) -> None:
    vip = "198.18.32.4"  # a service of its own: no earlier test's connections
    apply(backend, web(vip=vip))

    def ours() -> dict[str, int]:
        return dict(asyncio.run(backend.connections())[(vip, 80, "TCP")])

    def theirs() -> dict[str, int]:
        return {a: _active_conn(vip, 80, a) for a in NODES.values()}

    idle = dict.fromkeys(NODES.values(), 0)
    assert ours() == theirs() == idle
    node = lab.ask(f"open held {CLIENTS[0]} {vip} 80")
    assert node in NODES, node
    held = {a: int(n == node) for n, a in NODES.items()}
    assert ours() == theirs() == held
    assert lab.ask("close held") == "ok"
    got = ours()
    for _ in range(50):  # the FINs pass in a moment; this is no timing assertion
        if got == idle:
            break
        time.sleep(0.05)
        got = ours()
    assert got == theirs() == idle

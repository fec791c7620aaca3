"""Properties of plan() on random, well-formed clusters (hypothesis).

The pools are small and the names few, so random clusters run out of addresses, clash
on ports, share, request each other's addresses and disagree on families.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import Config
from appliance.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_LOAD_BALANCER_IPS,
    ANN_SCHEDULER,
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    Service,
    ServicePort,
)
from appliance.plan import Planner, plan
from tests.unit.builders import pool

CONFIG = Config(
    pools=(
        pool("a", "198.18.100.0/30", "fd00:198:18:100::/127"),
        pool("b", "198.18.101.0/31", auto_assign=False),
        pool("c", "198.18.102.0/31", namespaces=("ns1",)),
    )
)
SOME_IPS = [
    "198.18.100.0",
    "198.18.100.3",
    "198.18.101.1",
    "198.18.102.0",
    "198.18.99.9",
    "fd00:198:18:100::1",
    "not-an-ip",
]


@st.composite
def nodes(draw) -> dict[str, Node]:
    out = {}
    for i in range(draw(st.integers(1, 4))):
        addrs = [NodeAddress("InternalIP", f"198.18.0.{10 + i}")]
        if draw(st.booleans()):
            addrs.append(NodeAddress("InternalIP", f"fd00:198:18::{10 + i:x}"))
        labels = (
            {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
            if draw(st.integers(0, 5)) == 0
            else {}
        )
        out[f"node-{i}"] = Node(f"node-{i}", tuple(addrs), draw(st.integers(0, 4)) > 0, labels)
    return out


@st.composite
def services(draw, uid: int) -> Service:
    kind = draw(st.sampled_from(["LoadBalancer"] * 6 + ["ClusterIP", "NodePort", "ExternalName"]))
    ports = []
    used: set[tuple[int, str]] = set()
    for j in range(draw(st.integers(0 if kind == "ExternalName" else 1, 3))):
        number = draw(st.sampled_from([53, 80, 443]))
        proto = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
        if (number, proto) in used:
            continue
        used.add((number, proto))
        node_port = draw(st.one_of(st.none(), st.integers(30000, 30010)))
        ports.append(
            ServicePort(
                f"p{j}" if j else draw(st.sampled_from(["", "http"])),
                proto,
                number,
                number,
                node_port,
            )
        )
    annotations = {}
    share = draw(st.sampled_from([None, None, "k1", "k2"]))
    if share:
        annotations[ANN_ALLOW_SHARED_IP] = share
    if draw(st.integers(0, 4)) == 0:
        annotations[ANN_LOAD_BALANCER_IPS] = ",".join(
            draw(st.lists(st.sampled_from(SOME_IPS), min_size=1, max_size=2))
        )
    if draw(st.integers(0, 4)) == 0:
        annotations[ANN_ADDRESS_POOL] = draw(st.sampled_from(["a", "b", "c", "nope"]))
    if draw(st.integers(0, 6)) == 0:
        annotations[ANN_SCHEDULER] = draw(st.sampled_from(["rr", "mh", "bogus"]))
    families = draw(st.sampled_from([(), ("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")]))
    return Service(
        namespace=draw(st.sampled_from(["ns1", "ns2"])),
        name=f"svc-{uid}",
        type=kind,
        ports=tuple(ports),
        uid=f"uid-{draw(st.integers(0, 99)):02d}-{uid}",
        creation_timestamp=draw(
            st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])
        ),
        annotations=annotations,
        selector={"app": draw(st.sampled_from(["web", "db"]))},
        headless=kind == "ClusterIP" and draw(st.booleans()),
        cluster_ips=("198.19.0.1",) if kind in ("ClusterIP", "NodePort") else (),
        ip_families=families,
        ip_family_policy=draw(
            st.sampled_from([None, "SingleStack", "PreferDualStack", "RequireDualStack"])
        ),
        external_traffic_policy=draw(st.sampled_from(["Cluster", "Local"])),
        session_affinity=draw(st.sampled_from(["None", "ClientIP"])),
        load_balancer_source_ranges=draw(
            st.sampled_from([(), ("198.18.200.0/24",), ("198.18.200.0/24", "fd00:198:18:200::/64")])
        ),
        load_balancer_class=draw(st.sampled_from([None, None, None, "other"])),
        allocate_load_balancer_node_ports=draw(st.booleans()),
        external_name="db.example.com" if kind == "ExternalName" else None,
        status_ingress_ips=tuple(draw(st.lists(st.sampled_from(SOME_IPS[:-1]), max_size=2))),
    )


@st.composite
def clusters(draw) -> tuple[ClusterState, dict[tuple[str, str], bool]]:
    node_map = draw(nodes())
    svcs = {}
    slices = {}
    for i in range(draw(st.integers(0, 10))):
        svc = draw(services(i))
        if svc.key in svcs:
            continue
        svcs[svc.key] = svc
        eps = tuple(
            Endpoint(
                (f"198.18.64.{i * 10 + j}",),
                ready=draw(st.booleans()),
                serving=draw(st.booleans()),
                terminating=draw(st.booleans()),
                node_name=draw(st.sampled_from([*node_map, None, "gone"])),
                hostname=draw(st.sampled_from([None, f"h{j}"])),
            )
            for j in range(draw(st.integers(0, 4)))
        )
        ports = tuple(EndpointPort(p.name, p.port, p.protocol) for p in svc.ports)
        slices[svc.key] = (
            EndpointSlice(svc.namespace, f"{svc.name}-x", svc.name, "IPv4", eps, ports),
        )
    health = (
        {
            (draw(st.sampled_from(["", *svcs])), n): draw(st.booleans())
            for n in draw(st.lists(st.sampled_from(sorted(node_map)), max_size=3))
        }
        if svcs
        else {}
    )
    return ClusterState(services=svcs, endpoint_slices=slices, nodes=node_map), health


def sharing_ok(a: Service, b: Service) -> bool:
    ka, kb = a.annotations.get(ANN_ALLOW_SHARED_IP), b.annotations.get(ANN_ALLOW_SHARED_IP)
    if not ka or ka != kb:
        return False
    if {(p.port, p.protocol) for p in a.ports} & {(p.port, p.protocol) for p in b.ports}:
        return False
    if a.external_traffic_policy == "Local" and b.external_traffic_policy == "Local":
        return dict(a.selector) == dict(b.selector)
    return True


def in_pool(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(
        first.version == ip.version and first <= ip <= last  # type: ignore[operator]
        for p in CONFIG.pools
        for first, last in p.ranges
    )


SETTINGS = settings(
    max_examples=int(os.environ.get("PLAN_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(clusters())
def test_plan_is_deterministic_and_never_raises(cluster) -> None:
    state, health = cluster
    assert plan(state, CONFIG, health=health) == plan(state, CONFIG, health=health)


@SETTINGS
@given(clusters())
def test_no_address_goes_to_two_services_that_may_not_share(cluster) -> None:
    state, _ = cluster
    desired = plan(state, CONFIG)
    for alloc in desired.allocations.values():
        assert all(in_pool(a) for a in alloc.addresses)
        assert len({ipaddress.ip_address(a).version for a in alloc.addresses}) == len(
            alloc.addresses
        )
    holders: dict[str, list[str]] = {}
    for alloc in desired.allocations.values():
        for address in alloc.addresses:
            holders.setdefault(address, []).append(alloc.service)
    for keys in holders.values():
        for a, b in combinations(keys, 2):
            assert sharing_ok(state.services[a], state.services[b]), (a, b)
    vips = {a for alloc in desired.allocations.values() for a in alloc.addresses}
    assert {vs.vip for vs in desired.virtual_services} <= vips
    assert {v.address for v in desired.vips} == vips


@SETTINGS
@given(clusters())
def test_plan_is_stable_when_its_vips_come_back_as_status(cluster) -> None:
    """What a second LB host, or this one after a restart, computes from the status we wrote."""
    state, _ = cluster
    first = plan(state, CONFIG)
    written = {
        k: dataclasses.replace(
            svc,
            status_ingress_ips=first.allocations[k].addresses if k in first.allocations else (),
        )
        for k, svc in state.services.items()
    }
    again = plan(dataclasses.replace(state, services=written), CONFIG)
    assert again.allocations == first.allocations
    # And from the daemon's memory alone (a files source has no status to write to).
    assert plan(state, CONFIG, previous=first.allocations).allocations == first.allocations


@SETTINGS
@given(clusters(), clusters())
def test_incremental_planner_agrees_with_a_fresh_plan(one, two) -> None:
    (s1, h1), (s2, h2) = one, two
    # Keep s1's objects where s2 has the same keys, as a source keeps unchanged objects.
    services = {k: s1.services.get(k, v) for k, v in s2.services.items()}
    s2 = dataclasses.replace(s2, services=services)
    planner = Planner(CONFIG)
    first = planner.plan(s1, h1)
    second = planner.plan(s2, h2)
    assert second == plan(s2, CONFIG, previous=first.allocations, health=h2)


@SETTINGS
@given(clusters(), st.data())
def test_status_written_back_needs_no_new_allocation(cluster, data) -> None:
    """Our own status write-back returning through the watch: the planner reuses its
    allocation, and that equals a fresh plan of the new state."""
    state, health = cluster
    planner = Planner(CONFIG)
    first = planner.plan(state, health)
    keys = data.draw(st.lists(st.sampled_from(sorted(state.services) or ["none"]), unique=True))
    services = dict(state.services)
    for k in keys:
        if k in first.allocations:
            services[k] = dataclasses.replace(
                services[k], status_ingress_ips=first.allocations[k].addresses, resource_version="2"
            )
    written = dataclasses.replace(state, services=services)
    assert planner.plan(written, health) == plan(
        written, CONFIG, previous=first.allocations, health=health
    )

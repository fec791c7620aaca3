"""Virtual services and real servers: traffic policy, forwarding, affinity, health."""

from __future__ import annotations

import pytest

from appliance.model import ANN_SCHEDULER, LABEL_EXCLUDE_FROM_LB, ServicePort, VirtualService
from appliance.plan import Planner, plan
from tests.unit.builders import NODES, config, ep, lb, node, pool, slice_, state


def servers(vs: VirtualService) -> list[tuple[str, str, int, int]]:
    return [(rs.node, rs.address, vs.real_port, rs.weight) for rs in vs.real_servers]


def only_vs(desired) -> VirtualService:
    (vs,) = desired.virtual_services
    return vs


def test_cluster_policy_every_eligible_node_on_its_nodeport() -> None:
    nodes = [
        *NODES.values(),
        node("node-4", "198.18.0.14", ready=False),
        node("node-5", "198.18.0.15", labels={LABEL_EXCLUDE_FROM_LB: ""}),
        node("node-6", None, "fd00:198:18::16"),  # no IPv4 address: not for an IPv4 VIP
    ]
    vs = only_vs(plan(state(lb("web"), nodes=nodes), config()))
    assert (vs.vip, vs.port, vs.protocol, vs.scheduler, vs.forwarding) == (
        "198.18.100.0",
        80,
        "TCP",
        "rr",
        "nat",
    )
    assert servers(vs) == [
        ("node-1", "198.18.0.11", 30080, 1),
        ("node-2", "198.18.0.12", 30080, 1),
        ("node-3", "198.18.0.13", 30080, 1),
    ]
    assert vs.persistence_timeout == 0
    assert vs.source_ranges is None
    assert vs.health_check_node_port is None


def test_local_policy_nodes_with_ready_endpoints_weighted_by_count() -> None:
    svc = lb("echo", external_traffic_policy="Local", health_check_node_port=32001)
    sl = slice_(
        "echo",
        ep("198.18.64.1", "node-1"),
        ep("198.18.64.2", "node-1"),
        ep("198.18.64.3", "node-2"),
        ep("198.18.64.4", "node-3", ready=False, serving=False),  # not ready: not counted
        ep("198.18.64.5", None),  # no node: cannot be local anywhere
    )
    vs = only_vs(plan(state(svc, slices=[sl]), config()))
    assert servers(vs) == [("node-1", "198.18.0.11", 30080, 2), ("node-2", "198.18.0.12", 30080, 1)]
    assert vs.health_check_node_port == 32001
    assert vs.traffic_policy == "Local"


def test_local_policy_terminating_only_node_drains_at_weight_zero() -> None:
    svc = lb("echo", external_traffic_policy="Local")
    sl = slice_(
        "echo",
        ep("198.18.64.1", "node-1"),
        ep("198.18.64.2", "node-2", ready=False, serving=True, terminating=True),
    )
    vs = only_vs(plan(state(svc, slices=[sl]), config()))
    assert servers(vs) == [("node-1", "198.18.0.11", 30080, 1), ("node-2", "198.18.0.12", 30080, 0)]


def test_local_policy_counts_endpoints_of_the_port_by_name() -> None:
    two_ports = (
        ServicePort("http", "TCP", 80, 8080, 30080),
        ServicePort("metrics", "TCP", 9090, 9090, 30090),
    )
    svc = lb("echo", external_traffic_policy="Local", ports=two_ports)
    from appliance.model import EndpointPort

    web = slice_("echo", ep("198.18.64.1", "node-1"), name="a")
    metrics = slice_(
        "echo", ep("198.18.64.9", "node-3"), ports=(EndpointPort("metrics", 9090),), name="b"
    )
    http_vs, metrics_vs = plan(state(svc, slices=[web, metrics]), config()).virtual_services
    assert [rs.node for rs in http_vs.real_servers] == ["node-1"]
    assert [rs.node for rs in metrics_vs.real_servers] == ["node-3"]


def test_local_policy_without_endpoints_has_no_real_servers() -> None:
    vs = only_vs(plan(state(lb("echo", external_traffic_policy="Local")), config()))
    assert vs.real_servers == ()


@pytest.mark.parametrize("forwarding", ["dr", "tun"])
def test_dr_and_tun_reach_the_service_port(forwarding) -> None:
    vs = only_vs(plan(state(lb("web")), config(forwarding=forwarding)))
    assert vs.real_port == 80
    assert vs.forwarding == forwarding


def test_no_nodeport_in_nat_mode_is_a_problem_not_a_silent_drop() -> None:
    ports = (
        ServicePort("http", "TCP", 80, 8080, None),
        ServicePort("https", "TCP", 443, 8443, 30443),
    )
    svc = lb("web", ports=ports, allocate_load_balancer_node_ports=False)
    desired = plan(state(svc), config())
    assert [vs.port for vs in desired.virtual_services] == [443]
    assert [str(p) for p in desired.problems] == [
        "Service shop/web: port http/TCP: not served: nat forwarding reaches nodes on their "
        "NodePort, and allocateLoadBalancerNodePorts is false"
    ]
    # dr reaches the service port itself: nothing is missing there.
    desired = plan(state(svc), config(forwarding="dr"))
    assert [vs.port for vs in desired.virtual_services] == [80, 443]
    assert desired.problems == ()


def test_multi_port_udp_sctp_and_dual_stack_vips() -> None:
    ports = (
        ServicePort("http", "TCP", 80, 8080, 30080),
        ServicePort("dns", "UDP", 53, 53, 30053),
        ServicePort("sig", "SCTP", 3868, 3868, 30868),
    )
    svc = lb(
        "multi", ports=ports, ip_family_policy="RequireDualStack", ip_families=("IPv4", "IPv6")
    )
    cfg = config(pool("default", "198.18.100.0/30", "fd00:198:18:100::/126"))
    desired = plan(state(svc), cfg)
    assert [(vs.vip, vs.port, vs.protocol) for vs in desired.virtual_services] == [
        ("198.18.100.0", 80, "TCP"),
        ("fd00:198:18:100::", 80, "TCP"),
        ("198.18.100.0", 53, "UDP"),
        ("fd00:198:18:100::", 53, "UDP"),
        ("198.18.100.0", 3868, "SCTP"),
        ("fd00:198:18:100::", 3868, "SCTP"),
    ]
    v6 = desired.virtual_services[1]
    assert [rs.address for rs in v6.real_servers] == [
        "fd00:198:18::11",
        "fd00:198:18::12",
        "fd00:198:18::13",
    ]
    assert v6.persistence_netmask == 128


def test_client_ip_affinity_is_persistence_with_its_timeout() -> None:
    desired = plan(
        state(
            lb("a", age=1, session_affinity="ClientIP", session_affinity_timeout=600),
            lb("b", age=2, session_affinity="ClientIP"),
        ),
        config(),
    )
    assert [vs.persistence_timeout for vs in desired.virtual_services] == [600, 10800]


def test_scheduler_annotation_and_default() -> None:
    desired = plan(
        state(
            lb("a", age=1, annotations={ANN_SCHEDULER: "mh"}),
            lb("b", age=2, annotations={ANN_SCHEDULER: "fastest"}),
            lb("c", age=3),
        ),
        config(scheduler="wlc"),
    )
    assert [vs.scheduler for vs in desired.virtual_services] == ["mh", "wlc", "wlc"]
    assert [str(p) for p in desired.problems] == [
        "Service shop/b: annotation appliance.io/scheduler: 'fastest' is not one of "
        "rr, wrr, lc, wlc, sh, dh, sed, nq, mh; using 'wlc'"
    ]


def test_local_under_the_default_rr_is_weighted() -> None:
    """Local weighs nodes by ready pods; rr would ignore that, so the config's rr becomes
    wrr. An annotation asking for rr, and Cluster (equal weights), keep rr."""
    pods = [slice_(n, ep("10.0.0.1", "node-1"), ep("10.0.0.2", "node-1")) for n in "abc"]
    desired = plan(
        state(
            lb("a", age=1, external_traffic_policy="Local"),
            lb("b", age=2, external_traffic_policy="Local", annotations={ANN_SCHEDULER: "rr"}),
            lb("c", age=3),
            slices=pods,
        ),
        config(),
    )
    assert [vs.scheduler for vs in desired.virtual_services] == ["wrr", "rr", "rr"]
    assert [rs.weight for rs in desired.virtual_services[0].real_servers] == [2]
    assert not desired.problems


def test_source_ranges_split_by_family() -> None:
    svc = lb(
        "a",
        load_balancer_source_ranges=("198.18.200.0/24",),
        ip_family_policy="RequireDualStack",
        ip_families=("IPv4", "IPv6"),
    )
    cfg = config(pool("default", "198.18.100.0/30", "fd00:198:18:100::/126"))
    desired = plan(state(svc), cfg)
    assert [vs.source_ranges for vs in desired.virtual_services] == [("198.18.200.0/24",), ()]
    assert [str(p) for p in desired.problems] == [
        "Service shop/a: loadBalancerSourceRanges has no IPv6 range: its IPv6 VIP admits no client"
    ]


def test_health_down_node_gets_weight_zero() -> None:
    desired = plan(state(lb("web")), config(), health={("shop/web", "node-2"): False})
    assert [rs.weight for rs in only_vs(desired).real_servers] == [1, 0, 1]
    assert desired.problems == ()


def test_node_wide_health_applies_to_cluster_services() -> None:
    desired = plan(state(lb("web")), config(), health={("", "node-3"): False})
    assert [rs.weight for rs in only_vs(desired).real_servers] == [1, 1, 0]


def test_every_real_server_down_fails_open() -> None:
    health = {("shop/web", n): False for n in NODES}
    desired = plan(state(lb("web")), config(), health=health)
    assert [rs.weight for rs in only_vs(desired).real_servers] == [1, 1, 1]
    assert [str(p) for p in desired.problems] == [
        "Service shop/web: every real server fails its health check: serving them all (fail open)"
    ]


def test_local_health_failing_open_keeps_endpoint_weights() -> None:
    svc = lb("echo", external_traffic_policy="Local")
    sl = slice_("echo", ep("198.18.64.1", "node-1"), ep("198.18.64.2", "node-1"))
    desired = plan(state(svc, slices=[sl]), config(), health={("shop/echo", "node-1"): False})
    assert servers(only_vs(desired)) == [("node-1", "198.18.0.11", 30080, 2)]
    assert len(desired.problems) == 1


def test_planner_replans_only_what_changed_and_agrees_with_plan() -> None:
    svc_a, svc_b = lb("a", age=1, external_traffic_policy="Local"), lb("b", age=2)
    sl1 = slice_("a", ep("198.18.64.1", "node-1"))
    planner = Planner(config())
    first = planner.plan(state(svc_a, svc_b, slices=[sl1]))
    sl2 = slice_("a", ep("198.18.64.1", "node-2"))
    second = planner.plan(state(svc_a, svc_b, slices=[sl2]))
    assert first.virtual_services[1] is second.virtual_services[1]  # b reused as is
    assert [rs.node for rs in second.virtual_services[0].real_servers] == ["node-2"]
    assert second == plan(state(svc_a, svc_b, slices=[sl2]), config(), first.allocations)

"""VIP allocation: every rule of appliance/plan/ipam.py, one case each."""

from __future__ import annotations

import pytest

from appliance.config import ClusterConfig, Config
from appliance.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_LOAD_BALANCER_IPS,
    Allocation,
    ServicePort,
)
from appliance.plan import plan
from appliance.plan.ipam import allocate
from tests.unit.builders import config, lb, pool, state


def vips(cfg: Config, *services, previous=None) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    allocations, problems = allocate(services, cfg, previous)
    return {k: a.addresses for k, a in allocations.items()}, [str(p) for p in problems]


def test_lowest_free_address_oldest_first() -> None:
    # Names and uids sort against age: only creationTimestamp can give this order.
    got, problems = vips(config(), lb("b", age=2), lb("c", age=1), lb("a", age=3))
    assert got == {
        "shop/c": ("198.18.100.0",),
        "shop/b": ("198.18.100.1",),
        "shop/a": ("198.18.100.2",),
    }
    assert problems == []


def test_uid_breaks_a_timestamp_tie() -> None:
    got, _ = vips(config(), lb("x", uid="2"), lb("y", uid="1"))
    assert got == {"shop/y": ("198.18.100.0",), "shop/x": ("198.18.100.1",)}


def test_held_address_stays_although_an_older_service_arrives() -> None:
    young = lb("young", age=5, status_ingress_ips=("198.18.100.0",))
    old = lb("old", age=1)
    got, _ = vips(config(), young, old)
    assert got == {"shop/young": ("198.18.100.0",), "shop/old": ("198.18.100.1",)}


def test_previous_plan_counts_as_held_when_status_is_empty() -> None:
    prev = {"shop/b": Allocation("shop/b", ("198.18.100.5",), ("default",))}
    got, _ = vips(config(), lb("a", age=1), lb("b", age=2), previous=prev)
    assert got == {"shop/a": ("198.18.100.0",), "shop/b": ("198.18.100.5",)}


def test_deleting_a_service_moves_no_other_vip() -> None:
    cfg = config()
    first = plan(state(lb("a", age=1), lb("b", age=2), lb("c", age=3)), cfg)
    after = plan(state(lb("b", age=2), lb("c", age=3)), cfg, previous=first.allocations)
    assert after.allocations["shop/b"] == first.allocations["shop/b"]
    assert after.allocations["shop/c"] == first.allocations["shop/c"]


def test_previous_plan_counts_when_the_status_is_stale() -> None:
    # b's status still names .0, which a (older) now requests; the last plan gave b .5.
    a = lb("a", age=1, load_balancer_ip="198.18.100.0")
    b = lb("b", age=2, status_ingress_ips=("198.18.100.0",))
    prev = {"shop/b": Allocation("shop/b", ("198.18.100.5",), ("default",))}
    got, _ = vips(config(), a, b, previous=prev)
    assert got == {"shop/a": ("198.18.100.0",), "shop/b": ("198.18.100.5",)}


def test_held_address_outside_every_pool_is_replaced() -> None:
    got, problems = vips(config(), lb("a", status_ingress_ips=("198.18.99.1",)))
    assert got == {"shop/a": ("198.18.100.0",)}
    assert problems == []


def test_two_services_holding_one_address_older_keeps_it() -> None:
    a = lb("a", age=1, status_ingress_ips=("198.18.100.3",))
    b = lb("b", age=2, status_ingress_ips=("198.18.100.3",))
    got, _ = vips(config(), b, a)
    assert got == {"shop/a": ("198.18.100.3",), "shop/b": ("198.18.100.0",)}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.4"}}, ("198.18.100.4",)),
        ({"load_balancer_ip": "198.18.100.6"}, ("198.18.100.6",)),
        (
            {
                "annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.4, fd00:198:18:100::4"},
                "ip_family_policy": "RequireDualStack",
                "ip_families": ("IPv4", "IPv6"),
            },
            ("198.18.100.4", "fd00:198:18:100::4"),
        ),
    ],
)
def test_requested_addresses(kw, expected) -> None:
    cfg = config(pool("default", "198.18.100.0/29", "fd00:198:18:100::/125"))
    got, problems = vips(cfg, lb("a", **kw))
    assert got == {"shop/a": expected}
    assert problems == []


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (
            {"annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.300"}},
            "requested address '198.18.100.300' is not an IP address",
        ),
        (
            {"load_balancer_ip": "198.18.99.9"},
            "requested address 198.18.99.9 is in no address pool",
        ),
        (
            {"annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.1,198.18.100.2"}},
            "requested addresses name two IPv4 addresses",
        ),
        (
            {"annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.1"}, "ip_families": ("IPv6",)},
            "requested address 198.18.100.1 is IPv4, the Service is not",
        ),
        (
            {
                "annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.1", ANN_ADDRESS_POOL: "other"},
            },
            "requested address 198.18.100.1 is in pool 'default', not 'other'",
        ),
        (
            {
                "annotations": {ANN_LOAD_BALANCER_IPS: "198.18.100.1"},
                "ip_families": ("IPv4", "IPv6"),
                "ip_family_policy": "RequireDualStack",
            },
            "RequireDualStack: no IPv6 address requested",
        ),
    ],
)
def test_requested_address_problems(kw, reason) -> None:
    cfg = config(pool("default", "198.18.100.0/29"), pool("other", "198.18.101.0/29"))
    got, problems = vips(cfg, lb("a", **kw))
    assert got == {}
    assert problems == [f"Service shop/a: {reason}"]


def test_requested_address_held_by_an_older_service_is_refused() -> None:
    old = lb("old", age=1, status_ingress_ips=("198.18.100.2",))
    young = lb("young", age=2, load_balancer_ip="198.18.100.2")
    got, problems = vips(config(), young, old)
    assert got == {"shop/old": ("198.18.100.2",)}
    assert problems == [
        "Service shop/young: requested address 198.18.100.2 is in use by shop/old, "
        "and sharing needs annotation appliance.io/allow-shared-ip on both"
    ]


def test_a_failed_request_still_keeps_its_address_from_auto_assignment() -> None:
    old = lb("old", age=1, load_balancer_ip="fd00:198:18:100::1", ip_families=("IPv6",))
    # young asks for .0 and for old's IPv6 address: it gets neither ...
    young = lb(
        "young",
        age=2,
        annotations={ANN_LOAD_BALANCER_IPS: "198.18.100.0,fd00:198:18:100::1"},
        ip_families=("IPv4", "IPv6"),
        ip_family_policy="RequireDualStack",
    )
    other = lb("other", age=3)
    cfg = config(pool("default", "198.18.100.0/29", "fd00:198:18:100::/126"))
    got, problems = vips(cfg, old, young, other)
    # ... and .0 is not handed to `other` meanwhile: next time `other` would hold it and
    # young's reason would change.
    assert got == {"shop/old": ("fd00:198:18:100::1",), "shop/other": ("198.18.100.1",)}
    assert problems == [
        "Service shop/young: requested address fd00:198:18:100::1 is in use by shop/old, "
        "and sharing needs annotation appliance.io/allow-shared-ip on both"
    ]


def test_requested_address_takes_precedence_over_a_younger_holder() -> None:
    old = lb("old", age=1, load_balancer_ip="198.18.100.2")
    young = lb("young", age=2, status_ingress_ips=("198.18.100.2",))
    got, problems = vips(config(), young, old)
    assert got == {"shop/old": ("198.18.100.2",), "shop/young": ("198.18.100.0",)}
    assert problems == []


def test_pool_annotation_and_auto_assign_off() -> None:
    cfg = config(
        pool("default", "198.18.100.0/30"), pool("reserved", "198.18.101.0/30", auto_assign=False)
    )
    got, _ = vips(cfg, lb("a", age=1), lb("b", age=2, annotations={ANN_ADDRESS_POOL: "reserved"}))
    assert got == {"shop/a": ("198.18.100.0",), "shop/b": ("198.18.101.0",)}


def test_unknown_pool_annotation() -> None:
    got, problems = vips(config(), lb("a", annotations={ANN_ADDRESS_POOL: "nope"}))
    assert got == {}
    assert problems == [
        "Service shop/a: annotation appliance.io/address-pool: no pool named 'nope'"
    ]


def test_restricted_pools_serve_their_services_first() -> None:
    cfg = config(
        pool("anyone", "198.18.100.0/30"),
        pool("shop-only", "198.18.101.0/30", namespaces=("shop",)),
        pool("web-only", "198.18.102.0/30", service_selector={"tier": "web"}),
    )
    got, _ = vips(
        cfg,
        lb("a", ns="shop", age=1),
        lb("b", ns="other", age=2),
        lb("c", ns="other", age=3, labels={"tier": "web"}),
    )
    assert got == {
        "shop/a": ("198.18.101.0",),
        "other/b": ("198.18.100.0",),
        "other/c": ("198.18.102.0",),
    }


def test_no_pool_serves_the_namespace() -> None:
    cfg = config(pool("shop-only", "198.18.101.0/30", namespaces=("shop",)))
    got, problems = vips(cfg, lb("a", ns="other"))
    assert got == {}
    assert problems == [
        "Service other/a: no auto-assign pool serves this namespace or these labels"
    ]


def test_exhausted_pool_is_a_reason_not_a_crash() -> None:
    cfg = config(pool("tiny", "198.18.100.0/31"))
    got, problems = vips(cfg, lb("a", age=1), lb("b", age=2), lb("c", age=3))
    assert set(got) == {"shop/a", "shop/b"}
    assert problems == ["Service shop/c: no free IPv4 address in pool 'tiny'"]


def test_avoid_buggy_ips_skips_dot_zero_and_dot_255() -> None:
    cfg = config(pool("p", "198.18.100.255-198.18.101.1", avoid_buggy_ips=True))
    got, problems = vips(cfg, lb("a", age=1), lb("b", age=2))
    assert got == {"shop/a": ("198.18.101.1",)}
    assert problems == ["Service shop/b: no free IPv4 address in pool 'p'"]


def test_load_balancer_class_filter() -> None:
    mine = Config(
        pools=(pool("default", "198.18.100.0/29"),),
        cluster=ClusterConfig(load_balancer_class="appliance.io/lb"),
    )
    desired = plan(
        state(lb("none", age=1), lb("ours", age=2, load_balancer_class="appliance.io/lb")), mine
    )
    assert set(desired.allocations) == {"shop/ours"}
    desired = plan(
        state(lb("none", age=1), lb("ours", age=2, load_balancer_class="appliance.io/lb")),
        config(),
    )
    assert set(desired.allocations) == {"shop/none"}


SHARE = {ANN_ALLOW_SHARED_IP: "k"}
P443 = (ServicePort("https", "TCP", 443, 8443, 30443),)


def test_sharing_same_key_different_ports() -> None:
    got, problems = vips(
        config(), lb("a", age=1, annotations=SHARE), lb("b", age=2, annotations=SHARE, ports=P443)
    )
    assert got == {"shop/a": ("198.18.100.0",), "shop/b": ("198.18.100.0",)}
    assert problems == []


def test_same_port_and_protocol_never_share() -> None:
    got, _ = vips(config(), lb("a", age=1, annotations=SHARE), lb("b", age=2, annotations=SHARE))
    assert got == {"shop/a": ("198.18.100.0",), "shop/b": ("198.18.100.1",)}


def test_same_port_other_protocol_shares() -> None:
    udp = (ServicePort("dns", "UDP", 80, 8080, 30053),)
    got, _ = vips(
        config(), lb("a", age=1, annotations=SHARE), lb("b", age=2, annotations=SHARE, ports=udp)
    )
    assert got["shop/a"] == got["shop/b"]


def test_different_keys_do_not_share() -> None:
    got, _ = vips(
        config(),
        lb("a", age=1, annotations=SHARE),
        lb("b", age=2, annotations={ANN_ALLOW_SHARED_IP: "other"}, ports=P443),
    )
    assert got["shop/a"] != got["shop/b"]


@pytest.mark.parametrize(("b_selector", "shared"), [({"app": "web"}, True), ({"app": "db"}, False)])
def test_local_services_share_only_with_the_same_selector(b_selector, shared) -> None:
    a = lb("a", age=1, annotations=SHARE, external_traffic_policy="Local", selector={"app": "web"})
    b = lb(
        "b",
        age=2,
        annotations=SHARE,
        ports=P443,
        external_traffic_policy="Local",
        selector=b_selector,
    )
    got, _ = vips(config(), a, b)
    assert (got["shop/a"] == got["shop/b"]) is shared


def test_requested_shared_address_with_a_port_clash() -> None:
    a = lb("a", age=1, annotations={**SHARE, ANN_LOAD_BALANCER_IPS: "198.18.100.3"})
    b = lb("b", age=2, annotations={**SHARE, ANN_LOAD_BALANCER_IPS: "198.18.100.3"})
    got, problems = vips(config(), a, b)
    assert got == {"shop/a": ("198.18.100.3",)}
    assert problems == [
        "Service shop/b: requested address 198.18.100.3 is in use by shop/a, "
        "which has port 80/TCP too"
    ]


DUAL_POOL = pool("default", "198.18.100.0/30", "fd00:198:18:100::/126")


@pytest.mark.parametrize(
    ("policy", "families", "cfg_pool", "expected", "problem"),
    [
        (
            "RequireDualStack",
            ("IPv6", "IPv4"),
            DUAL_POOL,
            ("fd00:198:18:100::", "198.18.100.0"),
            None,
        ),
        ("PreferDualStack", (), DUAL_POOL, ("198.18.100.0", "fd00:198:18:100::"), None),
        ("PreferDualStack", (), pool("v4", "198.18.100.0/30"), ("198.18.100.0",), None),
        (
            "RequireDualStack",
            (),
            pool("v4", "198.18.100.0/30"),
            None,
            "Service shop/a: RequireDualStack: no free IPv4 and IPv6 pair in pool 'v4'",
        ),
        ("SingleStack", ("IPv6",), DUAL_POOL, ("fd00:198:18:100::",), None),
    ],
)
def test_dual_stack(policy, families, cfg_pool, expected, problem) -> None:
    got, problems = vips(config(cfg_pool), lb("a", ip_family_policy=policy, ip_families=families))
    assert got.get("shop/a") == expected
    assert problems == ([problem] if problem else [])


def test_require_dual_stack_never_keeps_half_and_gives_the_half_back() -> None:
    cfg = config(pool("default", "198.18.100.0/31", "fd00:198:18:100::/128"))
    dual = lb(
        "dual",
        age=1,
        ip_family_policy="RequireDualStack",
        ip_families=("IPv4", "IPv6"),
        status_ingress_ips=("198.18.100.1",),
    )
    v6 = lb("v6", age=0, ip_families=("IPv6",))  # older: takes the only IPv6 address
    v4 = lb("v4", age=2)
    got, problems = vips(cfg, dual, v6, v4)
    # dual held .1 but cannot have IPv6: it keeps nothing, and .1 is free again.
    assert got == {"shop/v6": ("fd00:198:18:100::",), "shop/v4": ("198.18.100.0",)}
    assert problems == [
        "Service shop/dual: RequireDualStack: no free IPv4 and IPv6 pair in pool 'default'"
    ]
    got, _ = vips(cfg, dual, v6, v4, lb("v4b", age=3))
    assert got["shop/v4b"] == ("198.18.100.1",)


def test_default_family_from_config() -> None:
    cfg = Config(pools=(DUAL_POOL,), cluster=ClusterConfig(manifests=".", default_ip_family="IPv6"))
    got, _ = vips(cfg, lb("a"))
    assert got == {"shop/a": ("fd00:198:18:100::",)}

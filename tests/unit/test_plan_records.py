"""DNS records: names and contents as CoreDNS's kubernetes plugin would serve them."""

from __future__ import annotations

from appliance.config import DnsConfig
from appliance.model import ServicePort
from appliance.plan import plan
from tests.unit.builders import config, ep, ingress, lb, pool, slice_, state


def rr(desired) -> list[str]:
    """Records as zone-file lines."""
    out = []
    for r in desired.records:
        data = f"{r.priority} {r.weight} {r.port} {r.data}" if r.rtype == "SRV" else r.data
        out.append(f"{r.name} {r.ttl} {r.rtype} {data}")
    return out


def test_load_balancer_vip_and_srv_for_named_ports() -> None:
    ports = (ServicePort("http", "TCP", 80, 8080, 30080), ServicePort("", "UDP", 53, 53, 30053))
    desired = plan(state(lb("web", ports=ports)), config())
    assert rr(desired) == [
        "web.shop.svc.cluster.local 5 A 198.18.100.0",
        "_http._tcp.web.shop.svc.cluster.local 5 SRV 0 100 80 web.shop.svc.cluster.local",
    ]


def test_every_zone_and_the_ttl() -> None:
    dns = DnsConfig(zones=("cluster.local", "k8s.example.com"), ttl=30)
    desired = plan(
        state(lb("web", ports=(ServicePort("", "TCP", 80, 80, 30080),))), config(dns=dns)
    )
    assert rr(desired) == [
        "web.shop.svc.cluster.local 30 A 198.18.100.0",
        "web.shop.svc.k8s.example.com 30 A 198.18.100.0",
    ]


def test_dual_stack_vip_gives_a_and_aaaa() -> None:
    svc = lb(
        "web",
        ports=(ServicePort("", "TCP", 80, 80, 30080),),
        ip_family_policy="RequireDualStack",
        ip_families=("IPv4", "IPv6"),
    )
    cfg = config(pool("default", "198.18.100.0/30", "fd00:198:18:100::/126"))
    assert rr(plan(state(svc), cfg)) == [
        "web.shop.svc.cluster.local 5 A 198.18.100.0",
        "web.shop.svc.cluster.local 5 AAAA fd00:198:18:100::",
    ]


def test_cluster_ips_only_when_configured() -> None:
    svc = lb(
        "web", type="ClusterIP", cluster_ips=("198.19.0.10",), ports=(ServicePort("", "TCP", 80),)
    )
    assert rr(plan(state(svc), config())) == []
    dns = DnsConfig(zones=("cluster.local",), cluster_ips=True)
    assert rr(plan(state(svc), config(dns=dns))) == ["web.shop.svc.cluster.local 5 A 198.19.0.10"]


def test_headless_every_ready_endpoint_hostnames_and_dashed_names() -> None:
    svc = lb(
        "cache",
        type="ClusterIP",
        headless=True,
        ports=(ServicePort("redis", "TCP", 6379, 6379),),
    )
    from appliance.model import EndpointPort

    sl = slice_(
        "cache",
        ep("198.18.64.21", "node-1", hostname="cache-0"),
        ep("198.18.64.22", "node-2"),
        ep("198.18.64.23", "node-3", ready=False, serving=False),
        ports=(EndpointPort("redis", 6379),),
    )
    assert rr(plan(state(svc, slices=[sl]), config())) == [
        "cache.shop.svc.cluster.local 5 A 198.18.64.21",
        "cache-0.cache.shop.svc.cluster.local 5 A 198.18.64.21",
        "cache.shop.svc.cluster.local 5 A 198.18.64.22",
        "198-18-64-22.cache.shop.svc.cluster.local 5 A 198.18.64.22",
        "_redis._tcp.cache.shop.svc.cluster.local 5 SRV 0 50 6379 "
        "cache-0.cache.shop.svc.cluster.local",
        "_redis._tcp.cache.shop.svc.cluster.local 5 SRV 0 50 6379 "
        "198-18-64-22.cache.shop.svc.cluster.local",
    ]


def test_external_name_is_a_cname() -> None:
    svc = lb("db", type="ExternalName", external_name="DB.Example.com.", ports=())
    assert rr(plan(state(svc), config())) == ["db.shop.svc.cluster.local 5 CNAME db.example.com"]


def test_load_balancer_of_another_class_resolves_to_its_status() -> None:
    svc = lb("other", load_balancer_class="vendor.io/lb", status_ingress_ips=("198.18.120.5",))
    desired = plan(state(svc), config())
    assert desired.allocations == {}
    assert rr(desired)[0] == "other.shop.svc.cluster.local 5 A 198.18.120.5"


def test_load_balancer_without_a_vip_has_no_records() -> None:
    cfg = config(pool("tiny", "198.18.100.0/32"))
    desired = plan(state(lb("a", age=1), lb("b", age=2)), cfg)
    assert not [r for r in desired.records if r.owner == "Service shop/b"]


def test_ingress_hosts_inside_the_zones_resolve_to_its_status() -> None:
    dns = DnsConfig(zones=("cluster.local", "k8s.example.com"))
    ing = ingress(
        "storefront",
        ("Shop.K8s.example.com", "*.apps.k8s.example.com", "www.example.org"),
        ("198.18.100.1",),
    )
    desired = plan(state(ingresses=[ing]), config(dns=dns))
    assert rr(desired) == [
        "shop.k8s.example.com 5 A 198.18.100.1",
        "*.apps.k8s.example.com 5 A 198.18.100.1",
    ]
    assert [str(p) for p in desired.problems] == [
        "Ingress shop/storefront: host www.example.org is outside the DNS zones "
        "(cluster.local, k8s.example.com): not served"
    ]

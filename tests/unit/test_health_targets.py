"""What to check: targets from the desired state, per traffic policy and annotation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.config import ConfigError, HealthConfig, parse_config
from appliance.health.targets import Target, derive_targets
from appliance.model import ServicePort
from appliance.plan import plan
from tests.unit.builders import config, ep, lb, node, pool, slice_, state

MINIMAL = {
    "cluster": {"manifests": "m"},
    "pools": [{"name": "default", "addresses": ["198.18.100.0/28"]}],
}
HC = HealthConfig(interval=2.0, timeout=1.0, rise=2, fall=3)


def targets_of(st, hc: HealthConfig = HC, cfg=None, **kw):
    desired = plan(st, cfg or config())
    return derive_targets(st, desired, hc, **kw)


def local(name: str = "echo", **kw):
    kw.setdefault("health_check_node_port", 32001)
    return lb(name, external_traffic_policy="Local", **kw)


def echo_slice(name: str = "echo"):
    return slice_(name, ep("198.18.64.1", "node-1"), ep("198.18.64.2", "node-3"))


def summary(ts) -> list[tuple[str, str, str, str]]:
    return [(t.service, t.node, t.kind, t.endpoint) for t in ts.targets]


def test_cluster_services_share_one_kube_proxy_check_per_node() -> None:
    ts = targets_of(state(lb("web"), lb("api", age=1)))
    assert summary(ts) == [
        ("", "node-1", "kube-proxy-node", "http://198.18.0.11:10256/healthz"),
        ("", "node-2", "kube-proxy-node", "http://198.18.0.12:10256/healthz"),
        ("", "node-3", "kube-proxy-node", "http://198.18.0.13:10256/healthz"),
    ]
    assert ts.problems == ()
    t = ts.targets[0]
    assert (t.interval, t.timeout, t.rise, t.fall) == (2.0, 1.0, 2, 3)


def test_the_kube_proxy_port_is_configurable() -> None:
    ts = targets_of(state(lb("web")), replace(HC, kube_proxy_port=41000))
    assert {t.port for t in ts.targets} == {41000}
    ts = targets_of(state(lb("web")), kube_proxy_port=41001)
    assert {t.port for t in ts.targets} == {41001}


def test_the_config_file_sets_the_kube_proxy_port_and_the_limit() -> None:
    c = parse_config(
        {
            **MINIMAL,
            "health": {"kube_proxy_port": 20256, "max_in_flight": 64},
        }
    )
    assert (c.health.kube_proxy_port, c.health.max_in_flight) == (20256, 64)
    assert (HealthConfig().kube_proxy_port, HealthConfig().max_in_flight) == (10256, 1024)
    with pytest.raises(ConfigError) as e:
        parse_config({**MINIMAL, "health": {"kube_proxy_port": 0}})
    assert e.value.errors == ("health.kube_proxy_port: must be an integer from 1 to 65535, got 0",)


def test_local_services_ask_the_health_check_node_port_of_nodes_with_endpoints() -> None:
    ts = targets_of(state(local(), slices=[echo_slice()]))
    assert summary(ts) == [
        ("shop/echo", "node-1", "kube-proxy", "http://198.18.0.11:32001/"),
        ("shop/echo", "node-3", "kube-proxy", "http://198.18.0.13:32001/"),
    ]


def test_local_without_health_check_node_port_is_a_problem_not_a_guess() -> None:
    ts = targets_of(state(local(health_check_node_port=None), slices=[echo_slice()]))
    assert ts.targets == ()
    (p,) = ts.problems
    assert p.key == "shop/echo"
    assert "no healthCheckNodePort" in p.reason


def test_weight_zero_nodes_are_still_checked_so_they_can_come_back() -> None:
    st = state(lb("web"))
    desired = plan(st, config(), health={("", "node-2"): False})
    weights = {rs.node: rs.weight for rs in desired.virtual_services[0].real_servers}
    assert weights["node-2"] == 0
    ts = derive_targets(st, desired, HC)
    assert [t.node for t in ts.targets] == ["node-1", "node-2", "node-3"]


def test_disabled_checks_have_no_targets() -> None:
    assert targets_of(state(lb("web")), replace(HC, enabled=False)).targets == ()


def test_dual_stack_nodes_are_checked_once_on_ipv4() -> None:
    cfg = config(pool("default", "198.18.100.0/29", "fd00:198:18:100::/120"))
    svc = lb("web", ip_families=("IPv4", "IPv6"), ip_family_policy="RequireDualStack")
    ts = targets_of(state(svc), cfg=cfg)
    assert len({vs.family for vs in plan(state(svc), cfg).virtual_services}) == 2
    assert [t.address for t in ts.targets] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


def test_ipv6_only_service_checks_ipv6_addresses() -> None:
    cfg = config(pool("v6", "fd00:198:18:100::/120"))
    svc = lb("web", ip_families=("IPv6",))
    ts = targets_of(state(svc), cfg=cfg)
    assert ts.targets[0].endpoint == "http://[fd00:198:18::11]:10256/healthz"


def test_annotations_override_type_port_path_and_timing() -> None:
    svc = lb(
        "web",
        annotations={
            "appliance.io/health-check-type": "http",
            "appliance.io/health-check-port": "8081",
            "appliance.io/health-check-path": "/ready",
            "appliance.io/health-check-interval": "500ms",
            "appliance.io/health-check-timeout": "200ms",
            "appliance.io/health-check-rise": "1",
            "appliance.io/health-check-fall": "5",
            "appliance.io/health-check-status": "200,204",
            "appliance.io/health-check-body": "ok",
        },
    )
    ts = targets_of(state(svc))
    assert ts.problems == ()
    assert ts.targets[0] == Target(
        "shop/web",
        "node-1",
        "http",
        "198.18.0.11",
        8081,
        0.5,
        0.2,
        1,
        5,
        "/ready",
        (200, 204),
        "ok",
    )
    assert [t.key for t in ts.targets] == [("shop/web", f"node-{i}") for i in (1, 2, 3)]


def test_tcp_check_defaults_to_the_node_port() -> None:
    svc = lb("web", annotations={"appliance.io/health-check-type": "tcp"})
    ts = targets_of(state(svc))
    assert {t.endpoint for t in ts.targets} == {
        "tcp://198.18.0.11:30080",
        "tcp://198.18.0.12:30080",
        "tcp://198.18.0.13:30080",
    }


def test_timing_override_on_a_cluster_service_makes_its_own_node_check() -> None:
    svc = lb("web", annotations={"appliance.io/health-check-fall": "1"})
    ts = targets_of(state(svc, lb("api", age=1)))
    own = [t for t in ts.targets if t.service == "shop/web"]
    shared = [t for t in ts.targets if t.service == ""]
    assert len(own) == 3 and len(shared) == 3
    assert {t.fall for t in own} == {1} and {t.fall for t in shared} == {3}
    assert {t.kind for t in own} == {"kube-proxy-node"}


def test_type_none_checks_nothing() -> None:
    svc = lb("web", annotations={"appliance.io/health-check-type": "none"})
    assert targets_of(state(svc)).targets == ()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("type", "ping", "annotation appliance.io/health-check-type: 'ping' is not one of"),
        ("port", "0", "annotation appliance.io/health-check-port: '0' is not a port number"),
        ("port", "http", "annotation appliance.io/health-check-port: 'http' is not a port"),
        ("path", "ready", "annotation appliance.io/health-check-path: 'ready' is not an absolute"),
        ("interval", "soon", "annotation appliance.io/health-check-interval: 'soon' is not a"),
        ("timeout", "-1s", "annotation appliance.io/health-check-timeout: '-1s' is not a"),
        ("rise", "0", "annotation appliance.io/health-check-rise: '0' is not an integer"),
        ("fall", "2.5", "annotation appliance.io/health-check-fall: '2.5' is not an integer"),
        ("status", "2xx", "annotation appliance.io/health-check-status: '2xx' is not a list"),
        ("status", "", "annotation appliance.io/health-check-status: '' is not a list"),
    ],
)
def test_bad_annotations_are_one_problem_line_and_the_default(
    key: str, value: str, message: str
) -> None:
    svc = lb("web", annotations={f"appliance.io/health-check-{key}": value})
    ts = targets_of(state(svc))
    (p,) = ts.problems
    assert str(p).startswith(f"Service shop/web: {message}")
    assert "; using " in p.reason and "\n" not in p.reason
    assert len(ts.targets) == 3  # still checked, with the default for that setting


def test_timeout_not_shorter_than_interval_is_fixed_and_said() -> None:
    svc = lb("web", annotations={"appliance.io/health-check-interval": "300ms"})
    ts = targets_of(state(svc))
    (p,) = ts.problems
    assert p.reason == (
        "health-check timeout 1s must be shorter than the interval 300ms; using 150ms"
    )
    assert {t.timeout for t in ts.targets} == {0.15}


def test_huge_annotation_values_are_cut_short_in_messages() -> None:
    svc = lb("web", annotations={"appliance.io/health-check-type": "x" * 10_000})
    (p,) = targets_of(state(svc)).problems
    assert len(str(p)) < 300


def test_multi_port_service_checks_each_node_once() -> None:
    ports = (
        ServicePort("http", "TCP", 80, 8080, 30080),
        ServicePort("https", "TCP", 443, 8443, 30443),
    )
    svc = lb("web", ports=ports, annotations={"appliance.io/health-check-type": "tcp"})
    ts = targets_of(state(svc))
    assert [t.endpoint for t in ts.targets] == [f"tcp://198.18.0.1{i}:30080" for i in (1, 2, 3)]


def test_nodes_not_in_the_plan_are_not_checked() -> None:
    nodes = [node("node-1", "198.18.0.11"), node("node-2", "198.18.0.12", ready=False)]
    ts = targets_of(state(lb("web"), nodes=nodes))
    assert [t.node for t in ts.targets] == ["node-1"]


def test_services_not_ours_are_not_checked() -> None:
    ts = targets_of(state(lb("web", type="NodePort"), lb("x", age=1, load_balancer_class="other")))
    assert ts.targets == ()

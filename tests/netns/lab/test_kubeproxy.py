"""What the lab node programs, without a kernel: kube-proxy's choices per NodePort, the
routes, the health counts, pod names, the health replies, and the nftables text (golden)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from appliance.cluster.files import FilesSource
from appliance.lab import healthz, kubeproxy, pods
from appliance.lab.kubeproxy import Backend, HealthPort
from appliance.model import (
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    Service,
    ServicePort,
)
from tests.golden import assert_golden

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"
GOLDEN = Path(__file__).with_name("golden")


def examples() -> ClusterState:
    return FilesSource(EXAMPLES).load()


def by_port(p: kubeproxy.Plan) -> dict[tuple[str, str, int], kubeproxy.NodePort]:
    return {(np.family, np.protocol, np.node_port): np for np in p.node_ports}


def test_cluster_policy_sends_to_every_ready_endpoint_and_routes_the_remote_ones() -> None:
    p = kubeproxy.plan(examples(), "node-3")
    web = by_port(p)[("IPv4", "TCP", 30081)]
    assert web.targets == (
        Backend("198.18.64.10", 8080, "node-1"),
        Backend("198.18.64.11", 8080, "node-1"),
        Backend("198.18.64.70", 8080, "node-2"),
    )
    https = by_port(p)[("IPv4", "TCP", 30443)]
    assert {b.port for b in https.targets} == {8443}  # the slice's port of that name
    assert p.routes["198.18.64.70"] == "198.18.0.12"
    assert p.routes["198.18.64.10"] == "198.18.0.11"
    assert "198.18.64.131" not in p.routes  # node-3's own pod


def test_local_policy_uses_this_nodes_endpoints_and_drops_without() -> None:
    state = examples()
    one, two = by_port(kubeproxy.plan(state, "node-1")), by_port(kubeproxy.plan(state, "node-2"))
    echo1 = one[("IPv4", "TCP", 30090)]
    assert [b.address for b in echo1.targets] == ["198.18.64.12", "198.18.64.13"]
    assert echo1.affinity == 600  # sessionAffinity ClientIP, timeoutSeconds 600
    assert two[("IPv4", "TCP", 30090)].targets == ()
    assert two[("IPv4", "TCP", 30090)].verdict == "drop"
    assert two[("IPv4", "UDP", 30007)].verdict == "drop"


def test_a_family_without_endpoints_is_rejected() -> None:
    dual6 = by_port(kubeproxy.plan(examples(), "node-1"))[("IPv6", "TCP", 30082)]
    assert dual6.cluster == () and dual6.verdict == "reject"


def test_health_counts_ready_local_endpoints() -> None:
    state = examples()
    counts = {n: kubeproxy.plan(state, n).health[32001].local_endpoints for n in ("node-1",
              "node-2", "node-3")}  # fmt: skip
    assert counts == {"node-1": 2, "node-2": 0, "node-3": 1}


def _service(policy: str = "Cluster") -> Service:
    return Service(
        "ns", "svc", "NodePort", (ServicePort("http", "TCP", 80, 8080, 30100),),
        ip_families=("IPv4",), external_traffic_policy=policy,  # type: ignore[arg-type]
        health_check_node_port=32100 if policy == "Local" else None,
    )  # fmt: skip


def _state(*endpoints: Endpoint, policy: str = "Cluster") -> ClusterState:
    nodes = {
        n: Node(n, (NodeAddress("InternalIP", f"198.18.0.{i}"),)) for i, n in ((11, "a"), (12, "b"))
    }
    eps = EndpointSlice("ns", "svc-1", "svc", "IPv4", endpoints, (EndpointPort("http", 8080),))
    return ClusterState(
        services={"ns/svc": _service(policy)}, endpoint_slices={"ns/svc": (eps,)}, nodes=nodes
    )


def test_terminating_endpoints_serve_only_when_none_is_ready() -> None:
    ready = Endpoint(("198.18.64.1",), True, True, False, "a")
    leaving = Endpoint(("198.18.64.2",), False, True, True, "b")
    both = kubeproxy.plan(_state(ready, leaving), "a").node_ports[0]
    assert [b.address for b in both.targets] == ["198.18.64.1"]
    alone = kubeproxy.plan(_state(leaving), "a").node_ports[0]
    assert [b.address for b in alone.targets] == ["198.18.64.2"]
    # kube-proxy's health check counts ready endpoints only: a terminating pod drains.
    local = kubeproxy.plan(_state(leaving, policy="Local"), "b")
    assert local.health[32100].local_endpoints == 0
    assert [b.address for b in local.node_ports[0].targets] == ["198.18.64.2"]


def test_endpoints_on_unknown_nodes_are_left_out() -> None:
    nowhere = Endpoint(("198.18.64.3",), True, True, False, "gone")
    unnamed = Endpoint(("198.18.64.4",), True, True, False, None)
    np = kubeproxy.plan(_state(nowhere, unnamed), "a").node_ports[0]
    assert np.cluster == () and np.verdict == "reject"


def test_pods_and_their_names_come_from_the_slices() -> None:
    names = pods.PodNames(EXAMPLES).read()
    assert names["198.18.64.12"] == "echo-6f7b8c9d4e-a"
    mine = pods.local_pods(examples(), "node-1", names)
    assert mine["198.18.64.12"] == pods.Pod(
        "echo-6f7b8c9d4e-a", "198.18.64.12", frozenset({("tcp", 8080), ("udp", 7)})
    )
    assert mine["198.18.64.10"].ports == {("tcp", 8080), ("tcp", 8443)}
    assert set(mine) == {"198.18.64.10", "198.18.64.11", "198.18.64.12", "198.18.64.13"}
    unnamed = pods.local_pods(examples(), "node-1", {})
    assert unnamed["198.18.64.10"].name == "pod-198.18.64.10"


def test_the_service_health_reply_is_kube_proxys() -> None:
    status, headers, body = healthz.service_reply(HealthPort("shop/echo", 32001, 2), True)
    assert status == 200
    assert dict(headers)["X-Load-Balancing-Endpoint-Weight"] == "2"
    assert body.decode() == (
        '{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "echo"\n\t},\n'
        '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}'
    )
    assert healthz.service_reply(HealthPort("shop/echo", 32001, 0), True)[0] == 503
    assert healthz.service_reply(HealthPort("shop/echo", 32001, 2), False)[0] == 503


def test_healthz_json_and_times_as_go_writes_them() -> None:
    assert healthz.go_time(datetime(2026, 11, 21, 9, 8, 7, 120000, UTC)) == (
        "2026-11-21T09:08:07.12Z"
    )
    h = healthz.ProxyHealth(("IPv4",))
    status, _, body = h.handle(b"GET /healthz HTTP/1.1\r\n\r\n")
    doc = json.loads(body)
    assert status == 200 and doc["nodeEligible"] is True and doc["healthy"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", doc["currentTime"])
    h.node_eligible = False
    assert h.handle(b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 503
    livez = h.handle(b"GET /livez?verbose HTTP/1.1\r\n\r\n")
    assert livez[0] == 200 and "nodeEligible" not in json.loads(livez[2])
    assert h.handle(b"GET / HTTP/1.1\r\n\r\n")[0] == 404


def test_the_ruleset_of_node_1() -> None:
    text = kubeproxy.ruleset(kubeproxy.plan(examples(), "node-1"))
    assert text.startswith("table inet lab-kube-proxy\ndelete table inet lab-kube-proxy\n")
    assert_golden(GOLDEN / "node-1.nft", text)

"""The lab's stand-in Kubernetes node (appliance.lab.node), for real (root).

Our own small network, built here and not by the lab's topology: a bridge in a namespace of
its own, a client, and node-1..3 with the InternalIPs of examples/manifests/nodes.yaml, each
node running the agent on a copy of the examples (plus one IPv6 Service). Everything is
observed from outside the code under test: HTTP, TCP and UDP from the client namespace
(aan_probe.py: sockets and http.client), `ip` and `nft` in the node namespaces. Namespaces
are `aannode-<pid>-*`, deleted even when a test fails; the agents are our children, stopped
by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.netns import why_no_netns

pytestmark = pytest.mark.root

PREFIX = f"aannode-{os.getpid()}-"
REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "manifests"
PROBE = Path(__file__).with_name("aan_probe.py")
HOSTS = {  # name -> (IPv4, IPv6) on the LAN, as in nodes.yaml
    "client": ("198.18.0.100", "fd00:198:18::100"),
    "node-1": ("198.18.0.11", "fd00:198:18::11"),
    "node-2": ("198.18.0.12", "fd00:198:18::12"),
    "node-3": ("198.18.0.13", "fd00:198:18::13"),
}
NODES = ("node-1", "node-2", "node-3")
WEB_PODS = {
    "web-5c8d7f9b6d-a node-1",
    "web-5c8d7f9b6d-b node-1",
    "web-5c8d7f9b6d-c node-2",
}
NODE1_ECHO = {"echo-6f7b8c9d4e-a node-1", "echo-6f7b8c9d4e-c node-1"}
# One IPv6-only NodePort Service with its pod on node-2 (the examples have no IPv6 slice).
IPV6_EXTRA = """\
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: shop}
spec:
  type: NodePort
  clusterIP: fd00:198:18:96::20
  clusterIPs: [fd00:198:18:96::20]
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  selector: {app: web6}
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30086}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web6-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: web6}
addressType: IPv6
endpoints:
- addresses: [fd00:198:18:64::70]
  conditions: {ready: true}
  nodeName: node-2
  targetRef: {kind: Pod, name: web6-7d9f8b6c5-x, namespace: shop}
ports:
- {name: http, port: 8080, protocol: TCP}
"""


def sh(*argv: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def netns(host: str) -> str:
    return f"{PREFIX}{host}"


def in_ns(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", netns(host), *argv, check=check)


def probe(*args: str) -> str:
    return in_ns("client", sys.executable, str(PROBE), *args).stdout.strip()


def http(host: str, port: int, n: int = 1, path: str = "/") -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = json.loads(probe("http", host, str(port), str(n), path))
    return answers


def wait_for(what: str, check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.manifests = tmp / "manifests"
        self.logs = tmp
        self.agents: dict[str, subprocess.Popen[bytes]] = {}

    def up(self) -> None:
        shutil.copytree(EXAMPLES, self.manifests)
        (self.manifests / "zz-ipv6.yaml").write_text(IPV6_EXTRA)
        lan = netns("lan")
        sh("ip", "netns", "add", lan)
        sh("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", lan, "link", "set", "br0", "up")
        for host, (v4, v6) in HOSTS.items():
            ns = netns(host)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", lan, "link", "add", host, "type", "veth", "peer", "eth0", "netns", ns)
            sh("ip", "-n", lan, "link", "set", host, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        # Forwarding stays at the namespace's default: the agent turns it on itself.
        for node in NODES:
            self.start(node)
        for node in NODES:
            self.wait_ready(node)

    def start(self, node: str) -> None:
        with (self.logs / f"{node}.log").open("ab") as log:
            self.agents[node] = subprocess.Popen(
                ["ip", "netns", "exec", netns(node), sys.executable, "-m", "appliance.lab.node",
                 "--node", node, "--manifests", str(self.manifests)],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO,
            )  # fmt: skip

    def wait_ready(self, node: str, timeout: float = 20) -> None:
        p = self.agents[node]
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        line = p.stdout.readline().decode().strip() if ready else ""
        assert line == "ready", f"{node} did not start ({line!r}):\n{self.log(node)}"

    def log(self, node: str) -> str:
        return (self.logs / f"{node}.log").read_text(errors="replace")

    def signal(self, node: str, sig: signal.Signals) -> None:
        os.kill(self.agents[node].pid, sig)

    def write(self, name: str, text: str) -> None:
        """Replace one manifest atomically, as an editor or kubectl would."""
        tmp = self.manifests / f".{name}.tmp"  # hidden: the agent skips it
        tmp.write_text(text)
        os.replace(tmp, self.manifests / name)

    def down(self) -> None:
        for p in self.agents.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.agents.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for host in ("lan", *HOSTS):
            sh("ip", "netns", "del", netns(host), check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = why_no_netns(PREFIX, ("ip", "nft", "curl"))
    if why:
        pytest.skip(why)
    c = Cluster(tmp_path_factory.mktemp("aannode"))
    try:
        c.up()
        yield c
    finally:
        c.down()


def lo_addresses(node: str) -> set[str]:
    out = json.loads(in_ns(node, "ip", "-j", "addr", "show", "dev", "lo").stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"]}


def routes(node: str, family: str = "-4") -> dict[str, str]:
    out = json.loads(in_ns(node, "ip", "-j", family, "route", "show").stdout)
    return {r["dst"]: r["gateway"] for r in out if "gateway" in r}


def client_icmp6_unreachable() -> int:
    for line in in_ns("client", "cat", "/proc/net/snmp6").stdout.splitlines():
        name, value = line.split()
        if name == "Icmp6InDestUnreachs":
            return int(value)
    raise AssertionError("no Icmp6InDestUnreachs in /proc/net/snmp6")


def test_pods_live_on_lo_and_other_nodes_pods_are_routed(cluster: Cluster) -> None:
    mine = {a for a in lo_addresses("node-1") if a.startswith("198.18.")}
    assert mine == {"198.18.64.10/32", "198.18.64.11/32", "198.18.64.12/32", "198.18.64.13/32"}
    assert {"198.18.64.70/32", "198.18.64.71/32", "fd00:198:18:64::70/128"} <= lo_addresses(
        "node-2"
    )
    assert routes("node-3") == {
        "198.18.64.10": "198.18.0.11",
        "198.18.64.11": "198.18.0.11",
        "198.18.64.12": "198.18.0.11",
        "198.18.64.13": "198.18.0.11",
        "198.18.64.70": "198.18.0.12",
    }
    assert routes("node-1", "-6") == {"fd00:198:18:64::70": "fd00:198:18::12"}
    assert in_ns("node-3", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    # A pod answers on its own address, from the node itself.
    out = in_ns("node-2", "curl", "-s", "--max-time", "2", "http://198.18.64.71:6379/").stdout
    assert out == "cache-0 node-2\n"
    assert "node-1: pod echo-6f7b8c9d4e-a up 198.18.64.12 tcp/8080 udp/7" in cluster.log("node-1")


def test_the_table_holds_kube_proxy_like_rules(cluster: Cluster) -> None:
    one = in_ns("node-1", "nft", "list", "table", "inet", "lab-kube-proxy").stdout
    assert "tcp . 30081 : goto external-ipv4-shop/web-lb/tcp/http" in one
    assert "numgen random mod 3 vmap" in one
    assert "dnat ip to 198.18.64.70:8080" in one
    assert "masquerade" in one
    assert "fib daddr type local" in one
    two = in_ns("node-2", "nft", "list", "table", "inet", "lab-kube-proxy").stdout
    assert "tcp . 30090 : drop" in two  # Local, and no echo pod on node-2
    assert "dnat ip6 to [fd00:198:18:64::70]:8080" in one


def test_cluster_nodeport_on_a_node_without_the_pods(cluster: Cluster) -> None:
    answers = http(HOSTS["node-3"][0], 30081, 30)
    assert {a["status"] for a in answers} == {200}
    assert {a["headers"]["Content-Type"] for a in answers} == {"text/plain"}
    assert {a["headers"]["Connection"] for a in answers} == {"close"}
    bodies = {a["body"].strip() for a in answers}
    assert bodies <= WEB_PODS, bodies
    assert len(bodies) >= 2, f"30 requests all went to {bodies}"


def test_local_nodeport_only_where_pods_run(cluster: Cluster) -> None:
    assert probe("connect", HOSTS["node-2"][0], "30090", "1") == "timeout"  # dropped
    bodies = {a["body"].strip() for a in http(HOSTS["node-1"][0], 30090, 6)}
    assert bodies <= NODE1_ECHO, bodies
    assert http(HOSTS["node-3"][0], 30090)[0]["body"] == "echo-6f7b8c9d4e-b node-3\n"
    assert json.loads(probe("udp", HOSTS["node-1"][0], "30007", "1")).strip() in NODE1_ECHO
    assert json.loads(probe("udp", HOSTS["node-2"][0], "30007", "0.5")) == "timeout"


def test_ipv6_nodeport_and_a_family_without_endpoints(cluster: Cluster) -> None:
    answer = http(HOSTS["node-1"][1], 30086)[0]
    assert answer["body"] == "web6-7d9f8b6c5-x node-2\n"
    # dual is dual-stack but has no IPv6 endpoint: kube-proxy rejects (ICMPv6 port
    # unreachable, which this kernel's TCP takes as a soft error: the client times out).
    unreachable = client_icmp6_unreachable()
    assert probe("connect", HOSTS["node-1"][1], "30082", "0.5") in ("refused", "timeout")
    assert client_icmp6_unreachable() > unreachable


def test_health_check_node_port(cluster: Cluster) -> None:
    expect = {"node-1": (200, 2), "node-2": (503, 0), "node-3": (200, 1)}
    for node, (status, count) in expect.items():
        a = http(HOSTS[node][0], 32001, 1, "/anything")[0]
        assert a["status"] == status, (node, a)
        assert json.loads(a["body"]) == {
            "service": {"namespace": "shop", "name": "echo"},
            "localEndpoints": count,
            "serviceProxyHealthy": True,
        }
        assert a["headers"]["Content-Type"] == "application/json"
        assert a["headers"]["X-Content-Type-Options"] == "nosniff"
        assert a["headers"]["X-Load-Balancing-Endpoint-Weight"] == str(count)


def test_kube_proxy_healthz_and_the_node_being_deleted(cluster: Cluster) -> None:
    host = HOSTS["node-3"][0]
    a = http(host, 10256, 1, "/healthz")[0]
    assert a["status"] == 200
    doc = json.loads(a["body"])
    assert doc["nodeEligible"] is True
    assert {"lastUpdated", "currentTime"} <= doc.keys()
    assert http(host, 10256, 1, "/other")[0]["status"] == 404
    cluster.signal("node-3", signal.SIGUSR1)
    wait_for("503", lambda: http(host, 10256, 1, "/healthz")[0]["status"] == 503)
    assert json.loads(http(host, 10256, 1, "/healthz")[0]["body"])["nodeEligible"] is False
    assert http(host, 10256, 1, "/livez")[0]["status"] == 200  # as kube-proxy: livez only
    assert http(host, 32001)[0]["status"] == 200  # and the Service's check carries on
    cluster.signal("node-3", signal.SIGUSR2)
    wait_for("200 again", lambda: http(host, 10256, 1, "/healthz")[0]["status"] == 200)
    assert "node-3: SIGUSR1: kube-proxy down" in cluster.log("node-3")
    assert "node-3: SIGUSR2: kube-proxy healthy again" in cluster.log("node-3")


def test_a_bad_edit_keeps_the_last_good_state(cluster: Cluster) -> None:
    good = (cluster.manifests / "endpoints.yaml").read_text()
    cluster.write("endpoints.yaml", good + "\n- broken: [\n")
    try:
        wait_for(
            "the refusal logged", lambda: "manifests: File endpoints.yaml" in cluster.log("node-1")
        )
        assert http(HOSTS["node-1"][0], 32001)[0]["status"] == 200
        assert http(HOSTS["node-3"][0], 30081)[0]["body"].strip() in WEB_PODS
    finally:
        cluster.write("endpoints.yaml", good)


def test_pods_leaving_a_node_flip_its_health_check_within_200ms(cluster: Cluster) -> None:
    host = HOSTS["node-1"][0]
    assert http(host, 32001)[0]["status"] == 200

    before = (cluster.manifests / "endpoints.yaml").read_text()
    doc = yaml.safe_load(before)
    for item in doc["items"]:
        if item["metadata"]["name"] == "echo-k8f2s":
            item["endpoints"] = [e for e in item["endpoints"] if e["nodeName"] != "node-1"]
    after = yaml.safe_dump(doc, sort_keys=False)

    watcher = subprocess.Popen(
        ["ip", "netns", "exec", netns("client"), sys.executable, str(PROBE),
         "watch", host, "32001", "503", "3"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "watching"
        time.sleep(0.05)
        t0 = time.monotonic()
        cluster.write("endpoints.yaml", after)
        seen = watcher.stdout.readline().strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        watcher.wait()
    try:
        assert seen != "never", "32001 on node-1 never answered 503"
        took = float(seen) - t0
        assert took < 0.2, f"503 came {took * 1000:.0f} ms after the edit"
        doc = json.loads(http(host, 32001)[0]["body"])
        assert doc["localEndpoints"] == 0
        wait_for("pods gone from lo", lambda: "198.18.64.12/32" not in lo_addresses("node-1"))
        assert "198.18.64.13/32" not in lo_addresses("node-1")
        assert probe("connect", host, "30090", "0.5") == "timeout"  # Local, none here: drop
        assert "node-1: pod echo-6f7b8c9d4e-a down 198.18.64.12" in cluster.log("node-1")
    finally:
        cluster.write("endpoints.yaml", before)
    wait_for("echo back on node-1", lambda: http(host, 32001)[0]["status"] == 200)


def test_sigterm_removes_the_table_addresses_and_routes(cluster: Cluster) -> None:
    for node in NODES:
        cluster.signal(node, signal.SIGTERM)
    for node in NODES:
        assert cluster.agents[node].wait(timeout=5) == 0, cluster.log(node)
        listed = in_ns(node, "nft", "list", "table", "inet", "lab-kube-proxy", check=False)
        assert listed.returncode != 0, listed.stdout
        assert not any(a.startswith(("198.18.64.", "fd00:198:18:64:")) for a in lo_addresses(node))
        assert not routes(node) and not routes(node, "-6"), node
    assert probe("connect", HOSTS["node-3"][0], "10256", "1") == "refused"

"""End to end on the lab: a client, lb1 and lb2 running the appliance, three nodes whose
stand-in kube-proxy forwards NodePorts to "pods" that answer with their names.

The tests run in order on one lab (the failover last): round robin over the nodes, DNS,
externalTrafficPolicy Local, a manifest edit reaching the dataplane, a node losing its
pods, then SIGKILL of the master's daemon while the client keeps asking.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import E2E, HERE, PREFIX, REPO

pytestmark = pytest.mark.root

WEB_PODS = {"web-5c8d7f9b6d-a", "web-5c8d7f9b6d-b", "web-5c8d7f9b6d-c"}
ECHO_PODS = {"echo-6f7b8c9d4e-a": "node-1", "echo-6f7b8c9d4e-c": "node-1",
             "echo-6f7b8c9d4e-b": "node-3"}  # fmt: skip
# Clients of their own for the Local Service: echo has ClientIP affinity, so one client
# address always lands on one node; eight addresses show where new clients go.
CLIENTS = [f"198.18.0.{i}" for i in range(101, 109)]
NEW_CLIENTS = [f"198.18.0.{i}" for i in range(111, 117)]  # not pinned to a node yet


def routes_to(rules: str, node: str, node_port: int) -> bool:
    """Whether the LB's nft table sends anything to node:nodePort: a slot of a shared map
    (`... : 198.18.0.12 . 30090`) or, with affinity, a per-endpoint chain's DNAT."""
    return f"{node} . {node_port}" in rules or f"to {node}:{node_port}" in rules


def pod_of(answer: str) -> str:
    return answer.split(maxsplit=1)[0] if answer else ""


def test_services_get_vips_and_lb1_is_master(e2e: E2E) -> None:
    s1, s2 = e2e.state("lb1"), e2e.state("lb2")
    assert s1 and s2
    vips = {svc["key"]: svc["vips"] for svc in s1["services"]}
    assert vips["shop/web-lb"] == ["198.18.100.0"]  # kept from its status
    assert vips["shop/echo"] == ["198.18.101.2"]  # requested from the pool `reserved`
    assert {i["state"] for i in s1["vrrp"]} == {"master"}
    assert {i["state"] for i in s2["vrrp"]} == {"backup"}
    # The master holds the VIPs on its LAN interface, the backup does not.
    held = e2e.lab.run_in("lb1", "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert "198.18.100.0/32" in held and "198.18.101.2/32" in held
    assert "198.18.100.0" not in e2e.lab.run_in("lb2", "ip", "-o", "addr", "show").stdout
    # The master's page, reached from this machine's loopback (docs/img/ keeps a copy).
    page = e2e.page(e2e.web_ports[0], REPO / "out" / "e2e" / "status-lb1-master.png")
    assert page["host"].startswith("lb1") and set(page["roles"].values()) == {"master"}, page


def test_round_robin_over_the_nodes(e2e: E2E) -> None:
    vip = e2e.vip("shop/web-lb")
    e2e.observe()
    answers = [e2e.get(vip) for _ in range(12)]
    assert all(answers), answers
    # Every answer is a web pod (Cluster: a node without a web pod forwards to one).
    assert {pod_of(a) for a in answers} <= WEB_PODS, answers
    # rr over three equal nodes: each got a third of the new connections.
    assert e2e.new_connections(30081) == {"node-1": 4, "node-2": 4, "node-3": 4}


def test_dns_from_the_client(e2e: E2E) -> None:
    def dig(*args: str) -> str:
        done = e2e.lab.run_in("client", "dig", "@198.18.0.21", "+short", "+time=1", *args)
        return done.stdout.strip()

    assert dig("web-lb.shop.svc.cluster.local") == "198.18.100.0"
    assert dig("echo.shop.svc.k8s.example.com") == "198.18.101.2"
    assert dig("db.shop.svc.cluster.local", "CNAME").endswith(".")  # ExternalName
    # The backup answers the same: DNS does not depend on VRRP.
    done = e2e.lab.run_in(
        "client", "dig", "@198.18.0.22", "+short", "web-lb.shop.svc.cluster.local"
    )
    assert done.stdout.strip() == "198.18.100.0"


def _add_clients(e2e: E2E, clients: list[str]) -> None:
    for a in clients:
        e2e.lab.run_in("client", "ip", "addr", "add", f"{a}/24", "dev", "eth0")


def _echo_from_each_client(e2e: E2E, vip: str, clients: list[str] = CLIENTS) -> dict[str, str]:
    out = {}
    for a in clients:
        done = e2e.lab.run_in(
            "client", "curl", "-s", "--max-time", "1", "--interface", a, f"http://{vip}/"
        )
        out[a] = done.stdout.strip()
    return out


def test_local_policy_reaches_only_nodes_with_pods(e2e: E2E) -> None:
    vip = e2e.vip("shop/echo")
    _add_clients(e2e, CLIENTS)
    e2e.observe()
    answers = _echo_from_each_client(e2e, vip)
    assert all(answers.values()), answers
    assert {pod_of(a) for a in answers.values()} <= set(ECHO_PODS), answers
    seen = e2e.new_connections(30090)
    assert seen["node-2"] == 0, seen  # no echo pod there
    assert seen["node-1"] > 0 and seen["node-3"] > 0, seen
    # The pod that answered runs on the node that got the connection (no second hop).
    for a in answers.values():
        assert a.split()[1] == ECHO_PODS[pod_of(a)], a


def _echo_slice(items: list[dict[str, Any]]) -> dict[str, Any]:
    return next(i for i in items if i["metadata"]["labels"]["kubernetes.io/service-name"] == "echo")


def test_scaling_changes_the_real_servers_within_200ms(e2e: E2E) -> None:
    assert not routes_to(e2e.lb_rules(), "198.18.0.12", 30090), "node-2 in echo before the edit"

    def scale_up(items: list[dict[str, Any]]) -> None:
        _echo_slice(items)["endpoints"].append(
            {
                "addresses": ["198.18.64.72"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": "node-2",
                "targetRef": {"kind": "Pod", "name": "echo-6f7b8c9d4e-d", "namespace": "shop"},
            }
        )

    # The observer is the kernel: `nft monitor` on lb1 reports the rule that sends echo's
    # clients to node-2, and when.
    with e2e.nft_events("lb1") as wait:
        edited = e2e.edit_endpoints(scale_up)
        took = wait(lambda line: routes_to(line, "198.18.0.12", 30090)) - edited
    assert routes_to(e2e.lb_rules(), "198.18.0.12", 30090)
    print(f"e2e: manifest edit -> LB table {took * 1000:.0f} ms")
    assert took < 0.2, f"node-2 joined echo's real servers {took * 1000:.0f} ms after the edit"
    # New clients (the old ones stay on their node: ClientIP affinity) reach the new pod
    # once its node's kube-proxy has it too.
    _add_clients(e2e, NEW_CLIENTS)

    def all_answered() -> dict[str, str] | None:
        answers = _echo_from_each_client(e2e, e2e.vip("shop/echo"), NEW_CLIENTS)
        return answers if all(answers.values()) else None

    answers = e2e.wait("new clients answered", all_answered)
    assert "echo-6f7b8c9d4e-d" in {pod_of(a) for a in answers.values()}, answers


def test_a_node_whose_pods_go_away_stops_receiving_new_connections(e2e: E2E) -> None:
    def node1_pods_gone(items: list[dict[str, Any]]) -> None:
        sl = _echo_slice(items)
        sl["endpoints"] = [e for e in sl["endpoints"] if e["nodeName"] != "node-1"]

    e2e.edit_endpoints(node1_pods_gone)
    e2e.wait("node-1 out of echo", lambda: not routes_to(e2e.lb_rules(), "198.18.0.11", 30090))
    e2e.observe()
    answers = _echo_from_each_client(e2e, e2e.vip("shop/echo"))
    assert all(answers.values()), answers
    assert {a.split()[1] for a in answers.values()} <= {"node-2", "node-3"}, answers
    assert e2e.new_connections(30090)["node-1"] == 0


def test_a_node_marked_for_deletion_is_drained_then_comes_back(e2e: E2E) -> None:
    """kube-proxy's :10256/healthz answers 503 on node-3 (SIGUSR1 to its stand-in): the
    health checks (1 s interval, fall 2) take it out of Cluster Services with weight 0,
    and rise 2 brings it back."""
    agent = e2e.lab.children["node-3"]

    def weight(node: str) -> int | None:
        s = e2e.state() or {}
        for svc in s.get("services", []):
            if svc["key"] == "shop/web-lb":
                for rs in svc["ports"][0]["real_servers"]:
                    if rs["node"] == node:
                        return int(rs["weight"])
        return None

    def map_holds_node3() -> bool:  # the kernel's view: node-3 in web-lb's slots
        return routes_to(e2e.lb_rules(), "198.18.0.13", 30081)

    assert weight("node-3") == 1 and map_holds_node3()
    agent.send_signal(signal.SIGUSR1)
    e2e.wait("node-3 drained", lambda: weight("node-3") == 0 and not map_holds_node3(), 8)
    vip = e2e.vip("shop/web-lb")
    e2e.observe()
    assert all(e2e.get(vip) for _ in range(6))
    assert e2e.new_connections(30081)["node-3"] == 0
    agent.send_signal(signal.SIGUSR2)
    e2e.wait("node-3 back", lambda: weight("node-3") == 1 and map_holds_node3(), 8)


def test_sigkill_of_the_master_fails_over_under_a_second(e2e: E2E) -> None:
    vip = e2e.vip("shop/web-lb")
    shot_dir = REPO / "out" / "e2e"
    before = e2e.page(e2e.web_ports[1], shot_dir / "status-lb2-backup.png")
    assert set(before["roles"].values()) == {"backup"}, before
    probe = subprocess.Popen(
        ["ip", "netns", "exec", e2e.lab.netns("client"), sys.executable,
         str(HERE / "adm_probe.py"), vip, "80", "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # a second of answers first
        daemon = e2e.lab.children["appliance-lb1"]
        # The daemon and its VRRP process at once (a crash of the host's appliance: no
        # resignation), so lb2 must notice the silence. The daemon alone would not do:
        # its VRRP process resigns when the daemon dies (tests/netns/ha/test_ha_process.py).
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        out, _ = probe.communicate(timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    seen = json.loads(out.strip().splitlines()[-1])
    print(f"e2e: SIGKILL of the master -> client outage {seen['outage_ms']} ms ({seen})")
    assert seen["ok"] > 0 and seen["outage_ms"] < 1000, seen
    e2e.wait("lb2 master", lambda: e2e.lab.master() == "lb2")
    # The client's traffic crosses lb2 now: its own conntrack table says so. (lb1's kernel
    # still holds the VIPs and its table, as after a SIGKILL of keepalived: lb2's
    # gratuitous ARP is what moved the client.)
    assert e2e.get(vip), "no answer through the VIP after the failover"
    flows = e2e.lab.run_in("lb2", "conntrack", "-L", "-p", "tcp", "-d", vip).stdout
    assert f"dst={vip}" in flows, flows
    # The page of lb2, in a real browser, shows it master and owning the VIPs.
    after = e2e.page(e2e.web_ports[1], shot_dir / "status-lb2-master.png")
    assert after["host"].startswith("lb2"), after
    assert set(after["roles"].values()) == {"master"}, after
    assert after["owners"]["198.18.100.0"].startswith("lb2"), after


def _lan_link_up(lb: str) -> bool:
    """Is the LAN's end of the host's cable up (`ip link` in the bridge's namespace)?"""
    out = subprocess.run(
        ["ip", "-n", f"{PREFIX}lan", "-o", "link", "show", lb],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return "UP" in out.split("<", 1)[1].split(">", 1)[0].split(",")


def test_the_killed_master_returns_and_takes_back_its_vips_after_its_first_sync(
    e2e: E2E,
) -> None:
    # lb1's daemon was SIGKILLed above; `lab heal` starts it again. It must not preempt
    # before it has a plan, then (its priority is above lb2's) it takes the VIPs back.
    assert e2e.lab.master() == "lb2"
    assert "daemon" in " ".join(e2e.lab.heal("lb1"))
    e2e.wait("lb1 master again", lambda: e2e.lab.master() == "lb1")
    vip = e2e.vip("shop/web-lb")
    state = e2e.state("lb1") or {}
    assert state.get("ready"), state
    # Its configured priorities now, not the planless 1 it started with.
    config = yaml.safe_load((e2e.lab.state / "lb1.yaml").read_text())
    configured = {i["name"]: i["priority"] for i in config["ha"]["instances"]}
    assert {i["instance"]: i["priority"] for i in state["vrrp"]} == configured, state["vrrp"]
    assert 1 not in configured.values()
    e2e.wait("lb2 backup", lambda: {i["state"] for i in (e2e.state("lb2") or {})["vrrp"]}
             == {"backup"})  # fmt: skip
    assert e2e.get(vip), "no answer through the VIP after lb1 came back"


def test_host_loss_and_return(e2e: E2E) -> None:
    # `lab fail`: lb1's cable pulled and its daemon killed. lb2 takes over; the client is
    # served through lb2; `lab heal` brings lb1 back, and it takes over again.
    vip = e2e.vip("shop/web-lb")
    assert _lan_link_up("lb1")
    e2e.lab.fail("lb1")
    assert not _lan_link_up("lb1")
    e2e.wait("lb2 master", lambda: e2e.lab.master() == "lb2")
    e2e.wait("served through lb2", lambda: e2e.get(vip))
    flows = e2e.lab.run_in("lb2", "conntrack", "-L", "-p", "tcp", "-d", vip).stdout
    assert f"dst={vip}" in flows, flows
    assert e2e.state("lb1") is None  # gone from the LAN: its page does not answer
    e2e.lab.heal("lb1")
    assert _lan_link_up("lb1")
    e2e.wait("lb1 master again", lambda: e2e.lab.master() == "lb1")
    assert e2e.get(vip)

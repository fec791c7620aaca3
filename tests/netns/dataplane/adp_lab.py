"""The dataplane lab: a client, an LB host and three nodes, each its own network namespace.

  adp-client  eth0 198.18.30.2-4, fd00:198:18:30::2   (VIPs routed via the LB)
      |
  adp-lb      c0 198.18.30.1 | br0 198.18.31.1 (a bridge inside the namespace), VIPs on lo
      |
  adp-node1..3  eth0 198.18.31.2-4, fd00:198:18:31::2-4, NO default route: replies reach
                 the client only if the LB masquerades (the NodePort-on-a-node case).

Shared by the nftables suite (host) and the IPVS suite (inside the VM). Also used by benches.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent
CLIENT, LB = "adp-client", "adp-lb"
NODES = {"node1": "198.18.31.2", "node2": "198.18.31.3", "node3": "198.18.31.4"}
NODES6 = {"node1": "fd00:198:18:31::2", "node2": "fd00:198:18:31::3", "node3": "fd00:198:18:31::4"}
CLIENTS = ("198.18.30.2", "198.18.30.3", "198.18.30.4")
CLIENT6 = "fd00:198:18:30::2"
LB_NODE_SIDE = "198.18.31.1"
NODE_PORTS = (30080, 30081, 30082, 30083, 30053)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def ns_name(node: str) -> str:
    return f"adp-{node}"


class Lab:
    """Build with `up()`, tear down with `down()` (always, from a fixture's finally)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.procs: list[subprocess.Popen[str]] = []
        self.agent: subprocess.Popen[str] | None = None
        self.namespaces = [CLIENT, LB, *(ns_name(n) for n in NODES)]

    def up(self) -> None:
        self.down()  # a crashed earlier run may have left ours behind
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
            in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        # client <-> lb
        sh(
            "ip",
            "link",
            "add",
            "adp-c0",
            "netns",
            CLIENT,
            "type",
            "veth",
            "peer",
            "name",
            "c0",
            "netns",
            LB,
        )
        in_ns(CLIENT, "ip", "link", "set", "adp-c0", "name", "eth0")
        in_ns(CLIENT, "ip", "link", "set", "eth0", "up")
        for a in CLIENTS:
            in_ns(CLIENT, "ip", "addr", "add", f"{a}/24", "dev", "eth0")
        in_ns(CLIENT, "ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad")
        in_ns(LB, "ip", "link", "set", "c0", "up")
        in_ns(LB, "ip", "addr", "add", "198.18.30.1/24", "dev", "c0")
        in_ns(LB, "ip", "-6", "addr", "add", "fd00:198:18:30::1/64", "dev", "c0", "nodad")
        in_ns(CLIENT, "ip", "route", "add", "198.18.32.0/24", "via", "198.18.30.1")
        in_ns(CLIENT, "ip", "-6", "route", "add", "fd00:198:18:32::/64", "via", "fd00:198:18:30::1")
        # lb bridge <-> nodes
        in_ns(LB, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(LB, "ip", "link", "set", "br0", "up")
        in_ns(LB, "ip", "addr", "add", f"{LB_NODE_SIDE}/24", "dev", "br0")
        in_ns(LB, "ip", "-6", "addr", "add", "fd00:198:18:31::1/64", "dev", "br0", "nodad")
        for i, (node, address) in enumerate(NODES.items()):
            ns = ns_name(node)
            sh(
                "ip",
                "link",
                "add",
                f"adp-n{i}",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                f"n{i}",
                "netns",
                LB,
            )
            in_ns(ns, "ip", "link", "set", f"adp-n{i}", "name", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            in_ns(ns, "ip", "-6", "addr", "add", f"{NODES6[node]}/64", "dev", "eth0", "nodad")
            in_ns(LB, "ip", "link", "set", f"n{i}", "master", "br0")
            in_ns(LB, "ip", "link", "set", f"n{i}", "up")
        for vip in range(1, 10):  # VIPs are local on the LB (IPVS needs that; nft does not)
            in_ns(LB, "ip", "addr", "add", f"198.18.32.{vip}/32", "dev", "lo")
            in_ns(LB, "ip", "-6", "addr", "add", f"fd00:198:18:32::{vip}/128", "dev", "lo")
        in_ns(LB, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(LB, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for node in NODES:
            self.start(ns_name(node), str(HERE / "adp_nodeserver.py"), node, *map(str, NODE_PORTS))
        self.agent = self.spawn(CLIENT, str(HERE / "adp_agent.py"))

    def spawn(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, self.python, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def start(self, ns: str, *argv: str) -> None:
        p = self.spawn(ns, *argv)
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(
                f"{argv[1]} did not start: {line} {p.stderr.read() if p.stderr else ''}"
            )

    def ask(self, command: str) -> str:
        assert self.agent is not None and self.agent.stdin and self.agent.stdout
        self.agent.stdin.write(command + "\n")
        self.agent.stdin.flush()
        return self.agent.stdout.readline().strip()

    def spread(self, vip: str, port: int, n: int, src: str = CLIENTS[0]) -> Counter[str]:
        return Counter(self.ask(f"tcp {src} {vip} {port}") for _ in range(n))

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        existing = sh("ip", "netns", "list", check=False).stdout.split()
        for ns in self.namespaces:
            if ns in existing:
                sh("ip", "netns", "del", ns, check=False)
        time.sleep(0)  # namespaces go with their last process; nothing else to wait for

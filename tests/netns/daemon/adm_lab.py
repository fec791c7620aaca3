"""The daemon's test site: an LB host namespace and a node namespace joined by a veth.

    adm-lb    lb0 198.18.50.1/24      the daemon (VRRP on lb0, nftables, DNS, web)
    adm-peer  kp0 198.18.50.2/24      keepalived, the backup LB host (VRRP priority 100)
    adm-node  br0 198.18.50.11, .12   the LAN's bridge; node-1 (kube-proxy healthy) and
                                      node-2 (kube-proxy gone)

Everything is created inside our own namespaces; nothing touches the host's interfaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LB, NODE, PEER = "adm-lb", "adm-node", "adm-peer"
LB_ADDRESS, PEER_ADDRESS = "198.18.50.1", "198.18.50.2"
NODES = {"node-1": "198.18.50.11", "node-2": "198.18.50.12"}
POOL = "198.18.50.100/30"
WEB = "127.0.0.1:18080"
DNS_PORT = 15353
REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent

CONFIG = f"""\
state_dir: state
cluster:
  manifests: manifests
pools:
  - name: default
    addresses: [{POOL}]
dataplane:
  backend: nftables
ha:
  interface: lb0
  instances:
    - name: vi-1
      vrid: 50
      priority: 150
      advert_interval: 100ms
      family: IPv4
dns:
  listen: ["127.0.0.1:{DNS_PORT}"]
  zones: [cluster.local]
health:
  interval: 200ms
  timeout: 100ms
  rise: 1
  fall: 1
web:
  listen: "{WEB}"
"""

KEEPALIVED = """\
global_defs {
  router_id adm-peer
  vrrp_version 3
  enable_script_security
}
vrrp_instance adm {
  interface kp0
  state BACKUP
  virtual_router_id 50
  priority 100
  advert_int 0.1
  virtual_ipaddress {
    198.18.50.100/32 dev kp0
  }
}
"""

NODES_YAML = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
    f"""- apiVersion: v1
  kind: Node
  metadata: {{name: {name}}}
  status:
    addresses: [{{type: InternalIP, address: {address}}}]
    conditions: [{{type: Ready, status: "True"}}]
"""
    for name, address in NODES.items()
)


def service_yaml(name: str, port: int, node_port: int) -> str:
    """A LoadBalancer Service with one pod on each node."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop, uid: uid-{name}}}
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports: [{{name: http, protocol: TCP, port: {port}, targetPort: 8080, nodePort: {node_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
  - {{addresses: [198.18.64.10], nodeName: node-1, conditions: {{ready: true}}}}
  - {{addresses: [198.18.64.11], nodeName: node-2, conditions: {{ready: true}}}}
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


class Site:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.manifests = workdir / "manifests"
        self.config = workdir / "appliance.yaml"
        self.log = workdir / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.helpers: list[subprocess.Popen[str]] = []
        self.keepalived: subprocess.Popen[bytes] | None = None

    # --- the network -------------------------------------------------------------------

    def up(self) -> None:
        self.down_network()
        for ns in (LB, NODE, PEER):
            sh("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        # The LAN: a bridge inside the node namespace, the nodes' addresses on it.
        in_ns(NODE, "ip", "link", "add", "br0", "type", "bridge")
        for ns, ifname, port, address in ((LB, "lb0", "p-lb", LB_ADDRESS),
                                          (PEER, "kp0", "p-kp", PEER_ADDRESS)):  # fmt: skip
            sh("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port,
               "netns", NODE)  # fmt: skip
            in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", ifname)
            in_ns(ns, "ip", "link", "set", ifname, "up")
            in_ns(NODE, "ip", "link", "set", port, "master", "br0", "up")
        for address in NODES.values():
            in_ns(NODE, "ip", "addr", "add", f"{address}/24", "dev", "br0")
        in_ns(NODE, "ip", "link", "set", "br0", "up")
        # The node answers the VIP's clients through the LB (NAT mode's return path).
        in_ns(NODE, "ip", "route", "add", "default", "via", LB_ADDRESS)
        in_ns(LB, "sysctl", "-qw", "net.ipv4.ip_forward=1")  # what the lb_kernel role sets
        for i, (name, address) in enumerate(NODES.items()):
            extra = ["--no-healthz"] if i else []
            self._helper(NODE, str(HERE / "adm_node.py"), name, address, "30080,30081", *extra)
        self.manifests.mkdir(parents=True, exist_ok=True)
        (self.workdir / "state").mkdir(exist_ok=True)  # the unit's StateDirectory= makes it
        (self.manifests / "nodes.yaml").write_text(NODES_YAML)
        (self.manifests / "web.yaml").write_text(service_yaml("web", 80, 30080))
        self.config.write_text(CONFIG)

    def _helper(self, ns: str, *argv: str) -> None:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.helpers.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", f"{argv}: {line}"

    def start_keepalived(self) -> None:
        """The backup LB host: Debian's keepalived, VRRP only, a child we wait on."""
        conf = self.workdir / "keepalived.conf"
        conf.write_text(KEEPALIVED)
        pids = [self.workdir / "keepalived.pid", self.workdir / "vrrp.pid"]
        for p in pids:
            p.unlink(missing_ok=True)  # a stale PID file makes keepalived refuse to start
        with open(self.workdir / "keepalived.log", "ab") as log:
            self.keepalived = subprocess.Popen(
                ["ip", "netns", "exec", PEER, "keepalived", "-n", "-l", "-D", "-P", "-f",
                 str(conf), "-p", str(pids[0]), "-r", str(pids[1])],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def keepalived_state(self) -> str | None:
        """What keepalived last logged: MASTER, BACKUP, FAULT."""
        state = None
        for line in (self.workdir / "keepalived.log").read_text(errors="replace").splitlines():
            if "(adm) Entering " in line and " STATE" in line:
                state = line.split("(adm) Entering ", 1)[1].split(" STATE", 1)[0]
        return state

    def peer_vips(self) -> set[str]:
        out = in_ns(PEER, "ip", "-4", "-o", "addr", "show", "dev", "kp0").stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()} - {PEER_ADDRESS}

    def down_network(self) -> None:
        for ns in (LB, NODE, PEER):
            sh("ip", "netns", "del", ns, check=False)

    def stop_keepalived(self) -> None:
        if self.keepalived is not None:
            self.keepalived.terminate()
            try:
                self.keepalived.wait(5)
            except subprocess.TimeoutExpired:
                self.keepalived.kill()
                self.keepalived.wait()
            self.keepalived = None

    def wipe_lb_kernel(self) -> None:
        """What a reboot of the LB host leaves: its own address, no VIP, no ruleset."""
        out = in_ns(LB, "ip", "-o", "addr", "show", "dev", "lb0").stdout
        for line in out.splitlines():
            family, cidr = line.split()[2:4]
            ours = family == "inet" and cidr.split("/")[0] == LB_ADDRESS
            if family in ("inet", "inet6") and not ours and not cidr.startswith("fe80:"):
                # The killed daemon's VRRP process is resigning right now and removes its
                # VIPs too: one gone between the listing and this is gone all the same.
                in_ns(LB, "ip", "addr", "del", cidr, "dev", "lb0", check=False)
        in_ns(LB, "nft", "flush", "ruleset")  # this namespace's own ruleset, nothing else

    def down(self) -> None:
        self.stop_daemon(signal.SIGKILL)
        self.stop_keepalived()
        for p in self.helpers:
            p.kill()
            p.wait()
        self.helpers.clear()
        self.down_network()

    # --- the daemon ----------------------------------------------------------------------

    def start_daemon(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(
                ["ip", "netns", "exec", LB, sys.executable, "-m", "appliance.daemon",
                 "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )  # fmt: skip

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        p = self.daemon
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()
        finally:
            self.daemon = None

    def signal(self, sig: int) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(sig)

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        r = in_ns(LB, "curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}",
                  f"http://{WEB}{path}", check=False)  # fmt: skip
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def state(self) -> Any:
        code, body = self.get("/api/v1/state")
        assert code == 200, (code, body)
        return json.loads(body)

    def wait_for(self, what: str, cond: Any, limit: float = 15.0) -> Any:
        end = time.monotonic() + limit
        while True:
            with contextlib.suppress(Exception):
                value = cond()
                if value:
                    return value
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(f"daemon exited while waiting for {what}: {self.tail()}")
            if time.monotonic() > end:
                raise AssertionError(f"never happened: {what}\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def nft_elements(self) -> str:
        return in_ns(LB, "nft", "list", "table", "inet", "appliance", check=False).stdout

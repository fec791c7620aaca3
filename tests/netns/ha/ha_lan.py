"""A test LAN in network namespaces: a bridge in its own namespace, hosts on veth pairs.

Everything is named `aha-*`, addressed from 198.18.20.0/24 and fd00:198:18:20::/64, and
torn down by the fixture that built it. Processes started here are children we wait on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "aha-"
NET4 = "198.18.20."
NET6 = "fd00:198:18:20::"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class Host:
    ns: str
    ifname: str
    address4: str
    address6: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_ns(self.ns, *args, check=check)

    def addresses(self) -> set[str]:
        out = self.run("ip", "-o", "addr", "show", "dev", self.ifname).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def mac(self) -> str:
        out = self.run("cat", f"/sys/class/net/{self.ifname}/address").stdout
        return out.strip()

    def link_local(self) -> str:
        out = self.run("ip", "-6", "-o", "addr", "show", "dev", self.ifname, "scope", "link")
        return out.stdout.split()[3].split("/")[0]

    def neighbour_mac(self, address: str) -> str | None:
        out = self.run("ip", "neigh", "show", address, "dev", self.ifname).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    def set_link(self, up: bool) -> None:
        self.run("ip", "link", "set", self.ifname, "up" if up else "down")


@dataclass
class Lan:
    tag: str
    bridge_ns: str = ""
    hosts: list[Host] = field(default_factory=list)

    def add_host(self, name: str, index: int, *, arp_accept: bool = True) -> Host:
        """A host on the bridge. `arp_accept` lets a gratuitous ARP create a neighbour
        entry (a client learning a VIP it never asked for). Hosts that hear GARPs for
        thousands of VIPs must go without: the kernel's neighbour table and its gc_thresh3
        (1024) are shared by every namespace, and once full the kernel drops even
        multicast sends that need an entry, VRRP adverts among them."""
        ns = f"{PREFIX}{self.tag}-{name}"
        peer = f"{self.tag}{name}"[:15]
        sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "-n",
            self.bridge_ns,
            "link",
            "add",
            peer,
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            ns,
        )
        sh("ip", "-n", self.bridge_ns, "link", "set", peer, "master", "br0", "up")
        host = Host(ns, "eth0", f"{NET4}{index}", f"{NET6}{index:x}")
        host.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        host.run("sysctl", "-qw", f"net.ipv4.conf.eth0.arp_accept={int(arp_accept)}")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "link", "set", "eth0", "up")
        host.run("ip", "addr", "add", f"{host.address4}/24", "dev", "eth0")
        host.run("ip", "addr", "add", f"{host.address6}/64", "dev", "eth0", "nodad")
        self.hosts.append(host)
        return host

    def wait_link_local(self, host: Host) -> str:
        for _ in range(200):
            with contextlib.suppress(IndexError):
                return host.link_local()
            time.sleep(0.02)
        raise AssertionError(f"{host.ns}: no link-local address")


def _delete_namespaces(tag: str) -> None:
    listing = sh("ip", "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}{tag}-"):
            sh("ip", "netns", "del", name, check=False)


@contextlib.contextmanager
def lan(tag: str) -> Iterator[Lan]:
    """A bridge namespace `aha-<tag>-sw`; hosts join it with `add_host`."""
    _delete_namespaces(tag)
    bridge_ns = f"{PREFIX}{tag}-sw"
    try:
        sh("ip", "netns", "add", bridge_ns)
        sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        # No multicast snooping: VRRP groups must reach every port at once.
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        yield Lan(tag, bridge_ns)
    finally:
        _delete_namespaces(tag)
        _wait_for_the_kernel()


def _wait_for_the_kernel(timeout: float = 120.0) -> None:
    """`ip netns del` returns at once; the kernel tears the namespace down later, in a
    worker of its `netns` workqueue (named `kworker/...+netns` while at it). A namespace
    that held 50,000 addresses and their ruleset keeps a CPU busy for a while, and the
    next test should not run its timings in that shadow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _netns_worker_busy():
        time.sleep(0.2)


def _netns_worker_busy() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            if comm.read_text().rstrip().endswith("+netns"):
                return True
    return False


class Child:
    """A process started in a namespace, killed by its PID and waited on."""

    def __init__(self, ns: str, argv: Sequence[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        self.send(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            rc = self.proc.wait()
        self._out.close()
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def keepalived_conf(
    *,
    name: str,
    interface: str,
    vrid: int,
    priority: int,
    advert_int: float,
    vips: Sequence[str],
    preempt: bool = True,
    checksum_as_v2: bool = False,
    unicast_src: str | None = None,
    unicast_peers: Sequence[str] = (),
) -> str:
    lines = [
        "global_defs {",
        f"  router_id {name}",
        "  vrrp_version 3",
        "  vrrp_garp_master_delay 0",
        "  vrrp_garp_master_repeat 3",
        "  vrrp_garp_interval 0.001",
        "  vrrp_gna_interval 0.001",
        "  enable_script_security",
        "}",
        f"vrrp_instance {name} {{",
        f"  interface {interface}",
        "  state BACKUP",
        f"  virtual_router_id {vrid}",
        f"  priority {priority}",
        f"  advert_int {advert_int}",
    ]
    if not preempt:
        lines.append("  nopreempt")
    if checksum_as_v2:
        lines.append("  version 3")
        lines.append("  v3_checksum_as_v2")
    if unicast_src:
        lines.append(f"  unicast_src_ip {unicast_src}")
    if unicast_peers:
        lines += ["  unicast_peer {", *(f"    {p}" for p in unicast_peers), "  }"]
    vip_lines = [f"    {v}/{128 if ':' in v else 32} dev {interface}" for v in vips]
    lines += ["  virtual_ipaddress {", *vip_lines, "  }", "}", ""]
    return "\n".join(lines)


class Keepalived:
    """Debian's keepalived in a namespace: VRRP only, no fork, no respawn, our PID files."""

    def __init__(self, host: Host, conf: str, workdir: Path, tag: str) -> None:
        self.host = host
        self.conf = workdir / f"{tag}.conf"
        self.conf.write_text(conf)
        self.pidfile = Path(f"/run/{PREFIX}{tag}-keepalived.pid")
        self.vrrp_pidfile = Path(f"/run/{PREFIX}{tag}-vrrp.pid")
        for p in (self.pidfile, self.vrrp_pidfile):
            p.unlink(missing_ok=True)  # a stale one makes keepalived refuse to start
        self.child = Child(
            host.ns,
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-G",
                "-P",
                "-R",
                "-f",
                str(self.conf),
                "-p",
                str(self.pidfile),
                "-r",
                str(self.vrrp_pidfile),
            ],
            workdir / f"{tag}.log",
        )

    def vrrp_pid(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(self.vrrp_pidfile.read_text().strip())
            time.sleep(0.02)
        raise AssertionError(f"keepalived {self.conf}: no VRRP child\n{self.child.output()}")

    def kill_vrrp(self) -> None:
        """SIGKILL the VRRP child: the master vanishes without a priority-0 advert."""
        os.kill(self.vrrp_pid(), signal.SIGKILL)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            if self.child.proc.poll() is None:
                os.kill(self.vrrp_pid(0.1), signal.SIGTERM)
        self.child.stop(signal.SIGTERM)
        for p in (self.pidfile, self.vrrp_pidfile):
            p.unlink(missing_ok=True)


REPO = Path(__file__).resolve().parents[3]
PYTHON = str(REPO / ".venv" / "bin" / "python")


def appliance_yaml(
    workdir: Path,
    instances: Sequence[dict[str, object]],
    *,
    garp_count: int = 3,
    garp_interval: str = "10ms",
    garp_refresh: str = "0s",
) -> str:
    """An appliance.yaml with one pool per family on the test LAN and these instances."""
    (workdir / "manifests").mkdir(exist_ok=True)
    lines = [
        "cluster:",
        f"  manifests: {workdir / 'manifests'}",
        "pools:",
        "  - name: lan4",
        f"    addresses: ['{NET4}100-{NET4}119']",
        "  - name: lan4b",
        f"    addresses: ['{NET4}120-{NET4}139']",
        "  - name: lan6",
        f"    addresses: ['{NET6}100-{NET6}11f']",
        "ha:",
        "  interface: eth0",
        f"  garp_count: {garp_count}",
        f"  garp_interval: {garp_interval}",
        f"  garp_refresh: {garp_refresh}",
        "  instances:",
    ]
    for inst in instances:
        first = True
        for key, value in inst.items():
            text = json.dumps(value)
            lines.append(f"    {'- ' if first else '  '}{key}: {text}")
            first = False
    return "\n".join(lines) + "\n"


class Ours:
    """Our speaker (`python -m appliance.commands.ha`) in a namespace, status as JSON."""

    def __init__(
        self, host: Host, config: str, workdir: Path, tag: str, vips: Sequence[str]
    ) -> None:
        self.host = host
        self.config = workdir / f"{tag}.yaml"
        self.config.write_text(config)
        self.status_file = workdir / f"{tag}.status.json"
        self.status_file.unlink(missing_ok=True)
        argv = [
            PYTHON,
            "-m",
            "appliance.commands.ha",
            "-v",
            "--config",
            str(self.config),
            "--status-file",
            str(self.status_file),
        ]
        for vip in vips:
            argv += ["--vip", vip]
        self.child = Child(host.ns, argv, workdir / f"{tag}.log")

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"instances": [], "dropped": {}, "owners": {}}
        return data

    def states(self) -> dict[str, str]:
        return {i["name"]: i["state"] for i in self.status()["instances"]}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.child.stop(sig)


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def web_server(host: Host, workdir: Path, name: str) -> Child:
    """A tiny HTTP server on port 8080 answering /who with `name`: traffic to the VIP."""
    root = workdir / f"www-{name}"
    root.mkdir(exist_ok=True)
    (root / "who").write_text(name)
    return Child(
        host.ns,
        [PYTHON, "-m", "http.server", "-b", "::", "-d", str(root), "8080"],
        workdir / f"www-{name}.log",
    )


def fetch(client: Host, vip: str) -> str | None:
    """Who answers on the VIP (None if nobody does within a second)."""
    host = f"[{vip}]" if ":" in vip else vip
    out = client.run("curl", "-s", "--max-time", "1", f"http://{host}:8080/who", check=False)
    return out.stdout if out.returncode == 0 else None


def keepalived_state(k: Keepalived, name: str) -> str | None:
    """The state keepalived last logged for instance `name` (MASTER, BACKUP, FAULT)."""
    state = None
    for line in k.child.output().splitlines():
        marker = f"({name}) Entering "
        if marker in line and " STATE" in line:
            state = line.split(marker, 1)[1].split(" STATE", 1)[0]
    return state


KEEPALIVED_COMPLAINTS = ("checksum", "bogus", "invalid", "mismatch", "wrong", "error")


def keepalived_complaints(k: Keepalived) -> list[str]:
    return [
        line
        for line in k.child.output().splitlines()
        if any(word in line.lower() for word in KEEPALIVED_COMPLAINTS)
    ]


def tcpdump(host: Host, pcap: Path, expression: str, log: Path) -> Child:
    """tcpdump writing `pcap`, returned once it says it is listening (it takes a while).
    Immediate mode: otherwise the last packets wait in the capture ring and are lost when
    tcpdump is stopped."""
    child = Child(
        host.ns,
        ["tcpdump", "-i", host.ifname, "--immediate-mode", "-U", "-n", "-w", str(pcap), expression],
        log,
    )
    wait_for("tcpdump listening", lambda: "listening on" in child.output())
    return child


def instance(priority: int) -> list[dict[str, object]]:
    """One IPv4 instance, VRID 51 at 100 ms adverts, with this priority."""
    return [
        {
            "name": "vi-1",
            "vrid": 51,
            "priority": priority,
            "advert_interval": "100ms",
            "family": "IPv4",
        }
    ]


def pair(ha_lan: Lan, tmp_path: Path, vip: str) -> tuple[Ours, Ours, Host, Host, Host]:
    """Our speakers on h1 (priority 150) and h2 (100) for `vip`, and a client."""
    h1 = ha_lan.add_host("h1", 1)
    h2 = ha_lan.add_host("h2", 2)
    client = ha_lan.add_host("cl", 9)
    a = Ours(h1, appliance_yaml(tmp_path, instance(150)), tmp_path, "a", [vip])
    b = Ours(h2, appliance_yaml(tmp_path, instance(100)), tmp_path, "b", [vip])
    return a, b, h1, h2, client

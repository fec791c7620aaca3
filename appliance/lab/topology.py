"""The lab's wiring: which hosts exist, their addresses, and the namespaces that make them.

    client .100 ─┐
    lb1    .21  ─┤
    lb2    .22  ─┼─ br0 (in namespace <prefix>lan)   198.18.0.0/24, fd00:198:18::/64
    node-1 .11  ─┤
    node-2 .12  ─┤
    node-3 .13  ─┘

Every host is a namespace `<prefix><host>` with one veth `eth0`; the other end, named
after the host, is a port of the bridge. The node addresses are the InternalIPs of
examples/manifests/nodes.yaml. VIPs come from the examples' pools (198.18.100.0/28,
198.18.101.0/29) and are announced on the LAN by ARP, so the client has them on-link, as a
router in front of a MetalLB L2 segment would.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Literal

Role = Literal["client", "lb", "node"]


@dataclass(frozen=True)
class Host:
    name: str  # also the bridge port's name in the LAN namespace (<= 15 characters)
    role: Role
    ipv4: str
    ipv6: str


HOSTS = (
    Host("client", "client", "198.18.0.100", "fd00:198:18::100"),
    Host("lb1", "lb", "198.18.0.21", "fd00:198:18::21"),
    Host("lb2", "lb", "198.18.0.22", "fd00:198:18::22"),
    Host("node-1", "node", "198.18.0.11", "fd00:198:18::11"),
    Host("node-2", "node", "198.18.0.12", "fd00:198:18::12"),
    Host("node-3", "node", "198.18.0.13", "fd00:198:18::13"),
)
LAN = "lan"
BRIDGE = "br0"
LAN_V4_LEN = 24
LAN_V6_LEN = 64
# The examples' pools, on-link for the client: the LB hosts answer ARP/ND for their VIPs.
VIP_RANGES = ("198.18.100.0/24", "198.18.101.0/24", "fd00:198:18:100::/64")
DEFAULT_PREFIX = "aanlab-"

# What the lb_kernel role would set on a real LB host; a container cannot write /proc/sys,
# so the lab sets them on the namespace before the host starts.
LB_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.ip_nonlocal_bind": "1",
    "net.ipv6.ip_nonlocal_bind": "1",
}
# A node forwards NodePort traffic to pods on other nodes, as kube-proxy needs.
NODE_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}


def host(name: str) -> Host:
    for h in HOSTS:
        if h.name == name:
            return h
    raise KeyError(f"no lab host {name!r} (hosts: {', '.join(h.name for h in HOSTS)})")


def lbs() -> tuple[Host, ...]:
    return tuple(h for h in HOSTS if h.role == "lb")


def nodes() -> tuple[Host, ...]:
    return tuple(h for h in HOSTS if h.role == "node")


def netns_name(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def existing(prefix: str) -> list[str]:
    """The namespaces of this lab that exist now (also those of a half-built lab)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def set_cable(prefix: str, host: str, up: bool) -> None:
    """The host's cable at the switch: its port on the LAN's bridge up or down."""
    _ip("-n", netns_name(prefix, LAN), "link", "set", host, "up" if up else "down")


def _sysctls(ns: str, values: dict[str, str]) -> None:
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        _ip("netns", "exec", ns, "sh", "-c", f"echo {value} > {path}")


def build(prefix: str) -> None:
    """Create every namespace, the bridge and the links. Raises if any of it exists."""
    lan = netns_name(prefix, LAN)
    _ip("netns", "add", lan)
    _ip("-n", lan, "link", "set", "lo", "up")
    _ip("-n", lan, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", lan, "link", "set", BRIDGE, "up")
    for h in HOSTS:
        ns = netns_name(prefix, h.name)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", lan, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", lan, "link", "set", h.name, "master", BRIDGE, "up")
        _ip("-n", ns, "addr", "add", f"{h.ipv4}/{LAN_V4_LEN}", "dev", "eth0")
        _ip("-n", ns, "addr", "add", f"{h.ipv6}/{LAN_V6_LEN}", "dev", "eth0", "nodad")
        _ip("-n", ns, "link", "set", "eth0", "up")
        if h.role == "lb":
            _sysctls(ns, LB_SYSCTLS)
        elif h.role == "node":
            _sysctls(ns, NODE_SYSCTLS)
        else:
            for vips in VIP_RANGES:
                _ip("-n", ns, "route", "add", vips, "dev", "eth0")


def destroy(prefix: str) -> list[str]:
    """Delete every namespace of the lab; the ones deleted."""
    gone = []
    for ns in existing(prefix):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        gone.append(ns)
    return gone

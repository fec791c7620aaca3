"""Virtual services -> IPVS table entries and their `ipvsadm` spelling (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from appliance.model import VirtualService

FWD = {"nat": "masq", "dr": "droute", "tun": "tunnel"}
FWD_METHOD = {"masq": 0, "local": 1, "tunnel": 2, "droute": 3}  # IP_VS_CONN_F_*
IPVSADM_FWD = {"masq": "-m", "droute": "-g", "tunnel": "-i"}
PROTO_FLAG = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
IP_VS_SVC_F_PERSISTENT = 0x1
MARK = "meta mark set meta mark | 0x4000"  # the same masquerade bit as nft.py


@dataclass(frozen=True, slots=True)
class IpvsService:
    """What `ipvsadm -A` sets: the parts of a service the kernel compares."""

    vip: str
    port: int
    protocol: str  # TCP | UDP | SCTP
    scheduler: str
    persistence: int = 0  # seconds; 0 = off

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.vip, self.port, self.protocol)

    @property
    def netmask(self) -> int:
        return 128 if ":" in self.vip else 32


@dataclass(frozen=True, slots=True)
class IpvsDest:
    address: str
    port: int
    weight: int
    fwd: str  # masq | droute | tunnel


def entries(vs: VirtualService) -> tuple[IpvsService, dict[str, IpvsDest]]:
    svc = IpvsService(vs.vip, vs.port, vs.protocol, vs.scheduler, vs.persistence_timeout)
    fwd = FWD[vs.forwarding]
    dests = {
        rs.address: IpvsDest(rs.address, vs.real_port, rs.weight, fwd) for rs in vs.real_servers
    }
    return svc, dests


def hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_args(svc: IpvsService) -> str:
    out = f"{PROTO_FLAG[svc.protocol]} {hostport(svc.vip, svc.port)} -s {svc.scheduler}"
    if svc.persistence:
        out += f" -p {svc.persistence}"
        out += " -M 128" if ":" in svc.vip else " -M 255.255.255.255"
    return out


def dest_args(svc: IpvsService, dest: IpvsDest) -> str:
    return (
        f"{PROTO_FLAG[svc.protocol]} {hostport(svc.vip, svc.port)}"
        f" -r {hostport(dest.address, dest.port)} {IPVSADM_FWD[dest.fwd]} -w {dest.weight}"
    )


def restore_script(services: Iterable[VirtualService]) -> str:
    """The table in `ipvsadm-restore` input form (also what a dry run prints)."""
    lines: list[str] = []
    for vs in sorted(services, key=lambda v: (v.family, v.vip, v.protocol, v.port)):
        svc, dests = entries(vs)
        lines.append(f"-A {service_args(svc)}")
        lines.extend(f"-a {dest_args(svc, d)}" for _, d in sorted(dests.items()))
    return "\n".join(lines) + ("\n" if lines else "")


def masq_script(services: Iterable[VirtualService], table: str) -> str:
    """The nftables helper IPVS nat mode needs: mark packets to our nat VIPs, masquerade
    them on the way to the node (with net.ipv4.vs.conntrack=1 conntrack sees IPVS's
    rewrite), so a node whose default route is elsewhere still answers through us."""
    v4: list[str] = []
    v6: list[str] = []
    for vs in services:
        if vs.forwarding == "nat":
            (v6 if ":" in vs.vip else v4).append(f"{vs.vip} . {vs.protocol.lower()} . {vs.port}")
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f'add table inet {table} {{ comment "managed by appliance (ipvs nat helper)"; }}',
        f"add set inet {table} nat4 {{ type ipv4_addr . inet_proto . inet_service; }}",
        f"add set inet {table} nat6 {{ type ipv6_addr . inet_proto . inet_service; }}",
        f"add chain inet {table} vipmark {{ type filter hook prerouting priority mangle; }}",
        f"add chain inet {table} reply_snat {{ type nat hook postrouting priority srcnat; }}",
        f"add rule inet {table} vipmark ip daddr . meta l4proto . th dport @nat4 {MARK}",
        f"add rule inet {table} vipmark ip6 daddr . meta l4proto . th dport @nat6 {MARK}",
        f"add rule inet {table} reply_snat meta mark & 0x4000 == 0x4000 masquerade",
    ]
    for name, elements in (("nat4", sorted(v4)), ("nat6", sorted(v6))):
        if elements:
            lines.append(f"add element inet {table} {name} {{ {', '.join(elements)} }}")
    return "\n".join(lines) + "\n"

"""Virtual services -> IPVS table entries and their `ipvsadm` spelling (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from appliance.address import host_port
from appliance.dataplane.nftrules import collapse_ranges
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


def service_args(svc: IpvsService) -> str:
    out = f"{PROTO_FLAG[svc.protocol]} {host_port(svc.vip, svc.port)} -s {svc.scheduler}"
    if svc.persistence:
        out += f" -p {svc.persistence}"
        out += " -M 128" if ":" in svc.vip else " -M 255.255.255.255"
    return out


def dest_args(svc: IpvsService, dest: IpvsDest) -> str:
    return (
        f"{PROTO_FLAG[svc.protocol]} {host_port(svc.vip, svc.port)}"
        f" -r {host_port(dest.address, dest.port)} {IPVSADM_FWD[dest.fwd]} -w {dest.weight}"
    )


def restore_script(services: Iterable[VirtualService]) -> str:
    """The table in `ipvsadm-restore` input form (also what a dry run prints)."""
    lines: list[str] = []
    for vs in sorted(services, key=lambda v: (v.family, v.vip, v.protocol, v.port)):
        svc, dests = entries(vs)
        lines.append(f"-A {service_args(svc)}")
        lines.extend(f"-a {dest_args(svc, d)}" for _, d in sorted(dests.items()))
    return "\n".join(lines) + ("\n" if lines else "")


HELPER_SETS = {
    "nat4": "type ipv4_addr . inet_proto . inet_service;",
    "nat6": "type ipv6_addr . inet_proto . inet_service;",
    "restricted4": "type ipv4_addr . inet_proto . inet_service;",
    "restricted6": "type ipv6_addr . inet_proto . inet_service;",
    "allow4": "type ipv4_addr . inet_proto . inet_service . ipv4_addr; flags interval;",
    "allow6": "type ipv6_addr . inet_proto . inet_service . ipv6_addr; flags interval;",
}


def helper_of(vs: VirtualService) -> tuple[tuple[str, str], ...]:
    """What one service puts in the helper table's sets: (set, element) pairs."""
    fam = "6" if ":" in vs.vip else "4"
    key = f"{vs.vip} . {vs.protocol.lower()} . {vs.port}"
    out: list[tuple[str, str]] = []
    if vs.forwarding == "nat":
        out.append((f"nat{fam}", key))
    if vs.source_ranges is not None:
        out.append((f"restricted{fam}", key))
        # Bad ranges are plan()'s to report; here they are simply not allowed in.
        nets, _ = collapse_ranges(vs.source_ranges, 6 if fam == "6" else 4)
        out.extend((f"allow{fam}", f"{key} . {net}") for net in nets)
    return tuple(out)


def helper_elements(services: Iterable[VirtualService]) -> dict[str, frozenset[str]]:
    """The elements of the helper table's sets for these services."""
    out: dict[str, set[str]] = {name: set() for name in HELPER_SETS}
    for vs in services:
        for name, element in helper_of(vs):
            out[name].add(element)
    return {name: frozenset(e) for name, e in out.items()}


def _elements(verb: str, table: str, name: str, elements: Iterable[str]) -> list[str]:
    items = sorted(elements)
    return [
        f"{verb} element inet {table} {name} {{ {', '.join(items[i : i + 500])} }}"
        for i in range(0, len(items), 500)
    ]


def helper_script(elements: dict[str, frozenset[str]], table: str) -> str:
    """The nftables helper IPVS needs, loaded whole (first apply of a process).

    - nat mode: mark packets to our nat VIPs and masquerade them on the way to the node
      (with net.ipv4.vs.conntrack=1 conntrack follows IPVS's rewrite), so a node whose
      default route is elsewhere still answers through us;
    - loadBalancerSourceRanges: a restricted VIP:port drops clients outside its ranges,
      before IPVS (which hooks later, at local-in) ever sees them.
    """
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f'add table inet {table} {{ comment "managed by appliance (ipvs helper)"; }}',
        *(f"add set inet {table} {n} {{ {d} }}" for n, d in HELPER_SETS.items()),
        f"add chain inet {table} vipmark {{ type filter hook prerouting priority mangle; }}",
        f"add chain inet {table} reply_snat {{ type nat hook postrouting priority srcnat; }}",
    ]
    for fam, ipf in (("4", "ip"), ("6", "ip6")):
        key = f"{ipf} daddr . meta l4proto . th dport"
        lines.append(
            f"add rule inet {table} vipmark {key} @restricted{fam}"
            f" {key} . {ipf} saddr != @allow{fam} drop"
        )
        lines.append(f"add rule inet {table} vipmark {key} @nat{fam} {MARK}")
    lines.append(f"add rule inet {table} reply_snat meta mark & 0x4000 == 0x4000 masquerade")
    for name in HELPER_SETS:
        lines.extend(_elements("add", table, name, elements[name]))
    return "\n".join(lines) + "\n"


def helper_delta(
    old: dict[str, frozenset[str]], new: dict[str, frozenset[str]], table: str
) -> list[str]:
    """Element updates only: adding a service never reloads the helper table."""
    cmds: list[str] = []
    for name in HELPER_SETS:
        cmds.extend(_elements("delete", table, name, old[name] - new[name]))
    for name in HELPER_SETS:
        cmds.extend(_elements("add", table, name, new[name] - old[name]))
    return cmds

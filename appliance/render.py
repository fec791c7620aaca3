"""The desired state as people read it: tables in the tools' own formats, and plain data.

The virtual service table is laid out as `ipvsadm -Ln` lists it and the records as a zone
file, so an operator compares the plan with the kernel and with `dig` by eye.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.address import host_port
from appliance.model import DesiredState, Record, VirtualService

_FORWARD = {"nat": "Masq", "dr": "Route", "tun": "Tunnel"}


def desired_to_dict(desired: DesiredState) -> dict[str, Any]:
    """Plain data (for JSON and YAML), stable in order and field names."""
    return {
        "allocations": [
            {"service": a.service, "addresses": list(a.addresses), "pools": list(a.pools)}
            | ({"shared_key": a.shared_key} if a.shared_key else {})
            for a in sorted(desired.allocations.values(), key=lambda a: a.service)
        ],
        "virtual_services": [_vs_dict(vs) for vs in desired.virtual_services],
        "vips": [
            {"address": v.address, "pool": v.pool, "services": list(v.services)}
            for v in desired.vips
        ],
        "records": [_record_dict(r) for r in desired.records],
        "problems": [{"kind": p.kind, "key": p.key, "reason": p.reason} for p in desired.problems],
        "refused": [
            {
                "kind": r.kind,
                "namespace": r.namespace,
                "name": r.name,
                "reason": r.reason,
                "source": r.source,
            }
            for r in desired.refused
        ],
    }


def _vs_dict(vs: VirtualService) -> dict[str, Any]:
    return {
        "service": vs.service,
        "port_name": vs.port_name,
        "vip": vs.vip,
        "port": vs.port,
        "protocol": vs.protocol,
        "scheduler": vs.scheduler,
        "persistence_timeout": vs.persistence_timeout,
        "source_ranges": None if vs.source_ranges is None else list(vs.source_ranges),
        "forwarding": vs.forwarding,
        "traffic_policy": vs.traffic_policy,
        "health_check_node_port": vs.health_check_node_port,
        "real_servers": [
            {"node": rs.node, "address": rs.address, "port": vs.real_port, "weight": rs.weight}
            for rs in vs.real_servers
        ],
    }


def _record_dict(r: Record) -> dict[str, Any]:
    d: dict[str, Any] = {"name": r.name, "type": r.rtype, "ttl": r.ttl, "data": r.data}
    if r.rtype == "SRV":
        d |= {"priority": r.priority, "weight": r.weight, "port": r.port}
    d["owner"] = r.owner
    return d


def _columns(rows: Iterable[tuple[str, ...]], indent: str = "") -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]


def ipvs_table(virtual_services: Iterable[VirtualService]) -> list[str]:
    lines = [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight",
    ]
    for vs in virtual_services:
        flags = f" persistent {vs.persistence_timeout}" if vs.persistence_timeout else ""
        head = f"{vs.protocol:<4} {host_port(vs.vip, vs.port)} {vs.scheduler}{flags}"
        note = f"{vs.service} {vs.port_name}".rstrip() + f", {vs.traffic_policy}"
        if vs.source_ranges is not None:
            note += f", from {', '.join(vs.source_ranges) or 'nobody'}"
        lines.append(f"{head:<48} # {note}")
        for rs in vs.real_servers:
            remote = host_port(rs.address, vs.real_port)
            forward = _FORWARD[vs.forwarding]
            lines.append(f"  -> {remote:<28} {forward:<7} {rs.weight:<6} # {rs.node}")
    return lines


def zone_lines(records: Iterable[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.rtype == "SRV":
            data = f"{r.priority} {r.weight} {r.port} {r.data}."
        elif r.rtype == "CNAME":
            data = f"{r.data}."
        else:
            data = r.data
        rows.append((f"{r.name}.", str(r.ttl), "IN", r.rtype, data))
    return _columns(rows)


def table(desired: DesiredState) -> str:
    out: list[str] = []
    out.append(f"Allocations ({len(desired.allocations)})")
    rows = [("SERVICE", "POOL", "VIPS")] + [
        (a.service, ",".join(dict.fromkeys(a.pools)), " ".join(a.addresses))
        for a in sorted(desired.allocations.values(), key=lambda a: a.service)
    ]
    out += _columns(rows, "  ")
    out.append("")
    out.append(
        f"Virtual services ({len(desired.virtual_services)}), as `ipvsadm -Ln` will list them"
    )
    out += ipvs_table(desired.virtual_services)
    out.append("")
    out.append(f"DNS records ({len(desired.records)})")
    out += zone_lines(desired.records)
    out.append("")
    out.append(f"Problems ({len(desired.problems)}): planned, but not as asked")
    out += [f"  {p}" for p in desired.problems]
    out.append("")
    out.append(f"Refused ({len(desired.refused)}): not planned")
    out += [f"  {r}" for r in desired.refused]
    return "\n".join(out) + "\n"

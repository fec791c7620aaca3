"""DNS records for the cluster's Services and Ingresses, as CoreDNS would name them. Pure.

For each configured zone:
- `<svc>.<ns>.svc.<zone>`: A/AAAA for a LoadBalancer Service's VIPs; for other Services
  their ClusterIPs when `dns.cluster_ips` is on; for a headless Service every ready
  endpoint, plus `<hostname>.<svc>.<ns>.svc.<zone>` (or the dashed address, as CoreDNS
  does) for each; CNAME to `externalName` for ExternalName.
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for each named port of a Service that
  has addresses.
- Ingress rule hosts: A/AAAA for the Ingress's status addresses, when the host is inside
  one of the zones (we are authoritative for nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.model import (
    Allocation,
    EndpointSlice,
    Ingress,
    Problem,
    Record,
    RType,
    Service,
    family_of,
)


def _address_type(address: str) -> RType:
    return "AAAA" if family_of(address) == "IPv6" else "A"


def _dashed(address: str) -> str:
    return address.replace(".", "-").replace(":", "-")


def in_zone(name: str, zones: Iterable[str]) -> bool:
    return any(name == z or name.endswith("." + z) for z in zones)


def service_records(
    svc: Service,
    allocation: Allocation | None,
    slices: tuple[EndpointSlice, ...],
    zones: tuple[str, ...],
    ttl: int,
    cluster_ips: bool,
) -> tuple[Record, ...]:
    owner = f"Service {svc.key}"
    out: list[Record] = []
    for zone in zones:
        base = f"{svc.name}.{svc.namespace}.svc.{zone}"
        if svc.type == "ExternalName":
            if svc.external_name:
                target = svc.external_name.lower().rstrip(".")
                out.append(Record(base, "CNAME", target, ttl, owner))
            continue
        # (target name, port name -> port) per SRV target; addresses per owner name
        srv_targets: list[tuple[str, dict[str, int]]] = []
        if svc.headless:
            seen: set[str] = set()
            for sl in slices:
                ports = {p.name: p.port for p in sl.ports}
                for ep in sl.endpoints:
                    if not ep.ready:
                        continue
                    for address in ep.addresses:
                        if sl.address_type == "FQDN" or address in seen:
                            continue
                        seen.add(address)
                        rtype = _address_type(address)
                        out.append(Record(base, rtype, address, ttl, owner))
                        host = f"{(ep.hostname or _dashed(address)).lower()}.{base}"
                        out.append(Record(host, rtype, address, ttl, owner))
                        srv_targets.append((host, ports))
        else:
            if svc.type == "LoadBalancer":
                addresses: tuple[str, ...] = allocation.addresses if allocation else ()
            else:
                addresses = svc.cluster_ips if cluster_ips else ()
            for address in addresses:
                out.append(Record(base, _address_type(address), address, ttl, owner))
            if addresses:
                srv_targets.append((base, {p.name: p.port for p in svc.ports}))
        # CoreDNS spreads SRV weight evenly over the targets of a name.
        weight = 100 // len(srv_targets) if srv_targets else 0
        for port in svc.ports:
            if not port.name:
                continue
            srv = f"_{port.name}._{port.protocol.lower()}.{base}"
            for target, ports in srv_targets:
                number = ports.get(port.name)
                if number is not None:
                    out.append(Record(srv, "SRV", target, ttl, owner, 0, weight, number))
    return tuple(out)


def ingress_records(
    ing: Ingress, zones: tuple[str, ...], ttl: int
) -> tuple[tuple[Record, ...], tuple[Problem, ...]]:
    owner = f"Ingress {ing.key}"
    records: list[Record] = []
    outside: list[str] = []
    for host in dict.fromkeys(h.lower().rstrip(".") for h in ing.hosts):
        if not in_zone(host.removeprefix("*."), zones):
            outside.append(host)
            continue
        for address in ing.status_ips:
            records.append(Record(host, _address_type(address), address, ttl, owner))
    problems: list[Problem] = []
    if outside:
        problems.append(
            Problem(
                "Ingress",
                ing.key,
                f"host {', '.join(outside)} is outside the DNS zones ({', '.join(zones)}): "
                "not served",
            )
        )
    return tuple(records), tuple(problems)

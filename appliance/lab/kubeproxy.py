"""kube-proxy's NodePorts for one node of the lab: what to program (pure), and the nftables
text that programs it.

The rules are shaped like kube-proxy's nftables mode (pkg/proxy/nftables): NodePort traffic
to a local address goes through `services` (a verdict map on protocol . port) to a
per-port `external-` chain, then to `service-` (every endpoint of the Service) or, with
externalTrafficPolicy Local, `local-` (this node's endpoints), which picks an `endpoint-`
chain with `numgen random mod N vmap`; the endpoint chain DNATs. Cluster traffic is marked
and masqueraded in postrouting, so a pod on another node answers through this node; Local
traffic keeps the client's address. A NodePort whose Service has no endpoint at all is
rejected, one whose Service has endpoints but none here (Local) is dropped, both from the
input hook (`@no-endpoint-nodeports`). sessionAffinity ClientIP uses one dynamic set per
endpoint, as kube-proxy does.

Differences, on purpose: one `inet` table for both families (kube-proxy has one table per
family), so chains, sets and maps carry the family in their names; only NodePorts (no
ClusterIPs, external IPs or LoadBalancer IPs: the lab's appliance sends VIP traffic to
NodeIP:NodePort); an endpoint on a node the manifests do not list (or without an address of
its family) is left out, since nothing could route to it; the table is replaced whole on
every change, so affinity entries start afresh then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from appliance.address import host_port
from appliance.model import (
    ClusterState,
    EndpointSlice,
    Family,
    Protocol,
    ServicePort,
    TrafficPolicy,
)

TABLE = "lab-kube-proxy"
FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")
MASQUERADE_MARK = "0x4000"


@dataclass(frozen=True, slots=True, order=True)
class Backend:
    """One endpoint behind a NodePort: the pod's address, its port, the node it runs on."""

    address: str
    port: int
    node: str

    def __str__(self) -> str:
        return host_port(self.address, self.port)


@dataclass(frozen=True, slots=True)
class NodePort:
    service: str  # "ns/name"
    port_name: str
    family: Family
    protocol: Protocol
    node_port: int
    policy: TrafficPolicy
    cluster: tuple[Backend, ...]  # every usable endpoint of the Service's port
    local: tuple[Backend, ...]  # those of this node
    affinity: int = 0  # sessionAffinity ClientIP timeout in seconds; 0 = none

    @property
    def targets(self) -> tuple[Backend, ...]:
        """Where traffic from outside the node goes."""
        return self.local if self.policy == "Local" else self.cluster

    @property
    def verdict(self) -> Literal["drop", "reject"] | None:
        """With nowhere to go: reject when the Service has no endpoint at all, drop when
        only this node has none (Local), as kube-proxy does."""
        if self.targets:
            return None
        return "drop" if self.cluster else "reject"

    @property
    def base(self) -> str:
        """The part of chain names that says which port of which Service, for which family."""
        family = "ipv6" if self.family == "IPv6" else "ipv4"
        return f"{family}-{self.service}/{self.protocol.lower()}/{self.port_name or self.node_port}"

    def describe(self) -> str:
        where = f"{self.protocol.lower()}/{self.node_port} {self.family}"
        what = f"{self.service}:{self.port_name or self.node_port} ({self.policy})"
        to = " ".join(str(b) for b in self.targets) or self.verdict or ""
        return f"nodeport {where} {what} -> {to}"


@dataclass(frozen=True, slots=True)
class HealthPort:
    """A Local Service's healthCheckNodePort and how many ready endpoints this node has."""

    service: str  # "ns/name"
    port: int
    local_endpoints: int


@dataclass(frozen=True, slots=True)
class Plan:
    node: str
    families: tuple[Family, ...]
    node_ports: tuple[NodePort, ...]
    routes: Mapping[str, str]  # address of a pod on another node -> that node's address
    health: Mapping[int, HealthPort]  # healthCheckNodePort -> its Service


def node_families(state: ClusterState, node: str) -> tuple[Family, ...]:
    """The families this node has an address of (both when the manifests do not list it)."""
    known = state.nodes.get(node)
    if known is None:
        return FAMILIES
    return tuple(f for f in FAMILIES if known.address_for(f)) or FAMILIES


def plan(state: ClusterState, node: str) -> Plan:
    families = node_families(state, node)
    node_ports: list[NodePort] = []
    routes: dict[str, str] = {}
    health: dict[int, HealthPort] = {}
    for key in sorted(state.services):
        svc = state.services[key]
        slices = state.endpoint_slices.get(key, ())
        svc_families = svc.ip_families or ("IPv4",)
        for port in svc.ports:
            if port.node_port is None:
                continue
            for family in svc_families:
                if family not in families:
                    continue
                ready, serving = _endpoints(slices, port, family)
                ready = _routable(ready, state, node, family, routes)
                serving = _routable(serving, state, node, family, routes)
                local_ready = tuple(b for b in ready if b.node == node)
                local_serving = tuple(b for b in serving if b.node == node)
                # Terminating-but-serving endpoints only when none is ready (KEP-1669).
                node_ports.append(
                    NodePort(
                        service=key,
                        port_name=port.name,
                        family=family,
                        protocol=port.protocol,
                        node_port=port.node_port,
                        policy=svc.external_traffic_policy,
                        cluster=ready or serving,
                        local=local_ready or local_serving,
                        affinity=svc.session_affinity_timeout
                        if svc.session_affinity == "ClientIP"
                        else 0,
                    )
                )
        if svc.external_traffic_policy == "Local" and svc.health_check_node_port:
            count = _local_ready(slices, node, svc_families[0])
            health[svc.health_check_node_port] = HealthPort(key, svc.health_check_node_port, count)
    return Plan(node, families, tuple(node_ports), routes, health)


def _endpoints(
    slices: Iterable[EndpointSlice], port: ServicePort, family: Family
) -> tuple[tuple[Backend, ...], tuple[Backend, ...]]:
    """The ready endpoints of a Service port, and the serving-but-terminating ones."""
    ready: set[Backend] = set()
    serving: set[Backend] = set()
    for s in slices:
        if s.address_type != family:
            continue
        match = [p for p in s.ports if p.name == port.name and p.protocol == port.protocol]
        if not match:
            continue
        for e in s.endpoints:
            if not e.addresses:
                continue
            b = Backend(e.addresses[0], match[0].port, e.node_name or "")
            if e.ready:
                ready.add(b)
            elif e.serving and e.terminating:
                serving.add(b)
    return tuple(sorted(ready)), tuple(sorted(serving))


def _routable(
    backends: Sequence[Backend], state: ClusterState, node: str, family: Family,
    routes: dict[str, str],
) -> tuple[Backend, ...]:  # fmt: skip
    """Those this node can reach: its own, and those of listed nodes (their routes added)."""
    kept: list[Backend] = []
    for b in backends:
        if b.node == node:
            kept.append(b)
            continue
        other = state.nodes.get(b.node)
        via = other.address_for(family) if other is not None else None
        if via is None:
            continue
        routes.setdefault(b.address, via)
        kept.append(b)
    return tuple(kept)


def _local_ready(slices: Iterable[EndpointSlice], node: str, family: Family) -> int:
    """kube-proxy's `localEndpoints`: this node's ready endpoints of the Service."""
    return len(
        {
            e.addresses[0]
            for s in slices
            if s.address_type == family
            for e in s.endpoints
            if e.addresses and e.ready and e.node_name == node
        }
    )


# --- nftables ------------------------------------------------------------------------------


def _fam(family: Family) -> tuple[str, str, str, str]:
    """Name suffix, address keyword, loopback, address type."""
    if family == "IPv6":
        return "ipv6", "ip6", "::1", "ipv6_addr"
    return "ipv4", "ip", "127.0.0.0/8", "ipv4_addr"


def _name(text: str) -> str:
    """nft identifiers take letters, digits and / . _ - but no colon (IPv6 addresses)."""
    return text.replace(":", ".")


def _endpoint(np: NodePort, b: Backend) -> str:
    return _name(f"endpoint-{np.base}__{b.address}/{b.port}")


def _affinity(np: NodePort, b: Backend) -> str:
    return _name(f"affinity-{np.base}__{b.address}/{b.port}")


def _pick(np: NodePort, backends: Sequence[Backend]) -> list[str]:
    """The rules that choose an endpoint: affinity first, then at random."""
    ip = _fam(np.family)[1]
    rules = []
    if np.affinity:
        rules = [f"{ip} saddr @{_affinity(np, b)} goto {_endpoint(np, b)}" for b in backends]
    choices = ", ".join(f"{i} : goto {_endpoint(np, b)}" for i, b in enumerate(backends))
    rules.append(f"numgen random mod {len(backends)} vmap {{ {choices} }}")
    return rules


def _chains(np: NodePort) -> tuple[dict[str, list[str]], list[str]]:
    """The chains of one NodePort (name -> rules) and its affinity set definitions."""
    _, ip, _, addr_type = _fam(np.family)
    chains: dict[str, list[str]] = {}
    sets: list[str] = []
    if not np.cluster:
        return chains, sets
    external: list[str] = []
    if np.policy == "Local":
        external += [
            'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
            f'fib saddr type local goto service-{np.base} comment "short-circuit local traffic"',
        ]
        if np.local:
            external.append(f"goto local-{np.base}")
    else:
        external += ["jump mark-for-masquerade", f"goto service-{np.base}"]
    chains[_name(f"external-{np.base}")] = external
    chains[_name(f"service-{np.base}")] = _pick(np, np.cluster)
    if np.policy == "Local" and np.local:
        chains[_name(f"local-{np.base}")] = _pick(np, np.local)
    proto = np.protocol.lower()
    for b in np.cluster:
        rules = [f"{ip} saddr {b.address} jump mark-for-masquerade"]  # a pod reaching itself
        if np.affinity:
            rules.append(f"update @{_affinity(np, b)} {{ {ip} saddr }}")
            sets.append(
                f"set {_affinity(np, b)} {{ type {addr_type}; flags dynamic,timeout; "
                f"timeout {np.affinity}s; }}"
            )
        rules.append(f"meta l4proto {proto} dnat {ip} to {b}")
        chains[_endpoint(np, b)] = rules
    return chains, sets


def _map(name: str, elements: Sequence[str]) -> list[str]:
    lines = [f"map {name} {{", "type inet_proto . inet_service : verdict"]
    if elements:
        lines.append("elements = { " + ", ".join(elements) + " }")
    return [*lines, "}"]


def _chain(name: str, rules: Sequence[str], hook: str = "") -> list[str]:
    head = [f"type {hook}; policy accept;"] if hook else []
    return [f"chain {name} {{", *head, *rules, "}"]


def ruleset(p: Plan) -> str:
    """The table as `nft -f` text that replaces any former version in one transaction."""
    body: list[str] = [f'comment "kube-proxy stand-in of lab node {p.node} (appliance.lab.node)"']
    services: list[str] = []
    checks: list[str] = []
    chains: dict[str, list[str]] = {}
    sets: list[str] = []
    for family in p.families:
        suffix, ip, loopback, _ = _fam(family)
        mine = [np for np in p.node_ports if np.family == family]
        to = [
            f"{np.protocol.lower()} . {np.node_port} : goto {_name(f'external-{np.base}')}"
            for np in mine
            if np.cluster
        ]
        none = [
            f"{np.protocol.lower()} . {np.node_port} : "
            + ("drop" if np.verdict == "drop" else "goto reject-chain")
            for np in mine
            if np.verdict
        ]
        body += _map(f"service-nodeports-{suffix}", to)
        body += _map(f"no-endpoint-nodeports-{suffix}", none)
        local = f"fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport"
        services.append(f"{local} vmap @service-nodeports-{suffix}")
        checks.append(f"{local} vmap @no-endpoint-nodeports-{suffix}")
        for np in mine:
            more_chains, more_sets = _chains(np)
            chains.update(more_chains)
            sets += more_sets
    body += sets
    body += _chain("nat-prerouting", ["jump services"], "nat hook prerouting priority -100")
    body += _chain("nat-output", ["jump services"], "nat hook output priority -100")
    body += _chain("nat-postrouting", ["jump masquerading"], "nat hook postrouting priority 100")
    body += _chain(
        "filter-input",
        ["ct state new jump nodeport-endpoints-check"],
        "filter hook input priority 0",
    )
    body += _chain("services", services)
    body += _chain("nodeport-endpoints-check", checks)
    body += _chain("reject-chain", ["reject"])
    body += _chain("mark-for-masquerade", [f"meta mark set meta mark | {MASQUERADE_MARK}"])
    body += _chain(
        "masquerading",
        [
            f"meta mark & {MASQUERADE_MARK} == 0 return",
            f"meta mark set meta mark ^ {MASQUERADE_MARK}",
            "masquerade fully-random",
        ],
    )
    for name in sorted(chains):
        body += _chain(name, chains[name])
    text = [
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        *_indent(body),
        "}",
    ]
    return "\n".join(text) + "\n"


def _indent(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    depth = 1
    for line in lines:
        if line == "}":
            depth -= 1
        out.append("\t" * depth + line)
        if line.endswith("{"):
            depth += 1
    return out

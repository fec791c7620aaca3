"""Virtual services and their real servers, per LoadBalancer Service. Pure.

The real servers are nodes, reached on the Service's NodePort (nat) or on the service
port itself (dr/tun, where kube-proxy on the node accepts traffic for the LB IP):

- `externalTrafficPolicy: Cluster`: every eligible node (Ready, without the
  exclude-from-external-load-balancers label), weight 1; kube-proxy spreads from there.
- `externalTrafficPolicy: Local`: only eligible nodes with a ready endpoint of the port,
  weighted by how many; a node whose only endpoints are terminating gets weight 0, so
  its open connections finish and no new ones arrive (drain).

Health results lower a failing node to weight 0; when that would leave no node with
weight, every node keeps its weight instead (fail open) and the Service says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.config import Config
from appliance.model import (
    ANN_SCHEDULER,
    SCHEDULERS,
    Allocation,
    EndpointSlice,
    Family,
    Node,
    Problem,
    RealServer,
    Service,
    ServicePort,
    VirtualService,
    family_of,
)

FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the planner needs of the node set, built once per plan and shared."""

    address: Mapping[tuple[str, Family], str]  # (eligible node, family) -> address
    everyone: Mapping[Family, tuple[RealServer, ...]]  # every eligible node, weight 1
    cluster: Mapping[Family, tuple[RealServer, ...]]  # the same, failing nodes at weight 0

    @staticmethod
    def build(nodes: Iterable[Node], node_down: frozenset[str] = frozenset()) -> NodeView:
        address: dict[tuple[str, Family], str] = {}
        everyone: dict[Family, list[RealServer]] = {"IPv4": [], "IPv6": []}
        for node in sorted(nodes, key=lambda n: n.name):
            if not node.ready or node.excluded:
                continue
            for fam in FAMILIES:
                addr = node.address_for(fam)
                if addr is not None:
                    address[(node.name, fam)] = addr
                    everyone[fam].append(RealServer(node.name, addr, 1))
        all_up = {f: tuple(rs) for f, rs in everyone.items()}
        cluster = {f: _weigh(rs, node_down) for f, rs in all_up.items()}
        return NodeView(address, all_up, cluster)


def _weigh(servers: tuple[RealServer, ...], down: frozenset[str]) -> tuple[RealServer, ...]:
    """Weight 0 for the failing nodes (existing connections finish, as keepalived's
    inhibit_on_failure); the same tuple when none fails, so it stays shared."""
    if not down or not any(rs.node in down for rs in servers):
        return servers
    return tuple(RealServer(rs.node, rs.address, 0) if rs.node in down else rs for rs in servers)


def local_weights(slices: Iterable[EndpointSlice], family: Family) -> dict[str, dict[str, int]]:
    """Port name -> node -> ready endpoints there; 0 for nodes with only terminating ones.

    A slice's endpoints count for the ports the slice lists (kube-proxy matches service
    ports to endpoint ports by name)."""
    out: dict[str, dict[str, int]] = {}
    for sl in slices:
        if sl.address_type != family or not sl.ports:
            continue
        ready: Counter[str] = Counter()
        draining: set[str] = set()
        for ep in sl.endpoints:
            if ep.node_name is None:
                continue
            if ep.ready:
                ready[ep.node_name] += 1
            elif ep.serving and ep.terminating:
                draining.add(ep.node_name)
        for p in sl.ports:
            weights = out.setdefault(p.name, {})
            for node, n in ready.items():
                weights[node] = weights.get(node, 0) + n
            for node in draining:
                weights.setdefault(node, 0)
    return out


def scheduler_of(svc: Service, config: Config) -> tuple[str, str | None]:
    """The IPVS scheduler for a Service, and a problem when its annotation is not one."""
    asked = svc.annotations.get(ANN_SCHEDULER)
    if asked is None:
        return config.dataplane.scheduler, None
    if asked in SCHEDULERS:
        return asked, None
    default = config.dataplane.scheduler
    return default, (
        f"annotation {ANN_SCHEDULER}: {asked!r} is not one of {', '.join(SCHEDULERS)}; "
        f"using {default!r}"
    )


def source_ranges_for(svc: Service, family: Family) -> tuple[str, ...] | None:
    if not svc.load_balancer_source_ranges:
        return None
    return tuple(r for r in svc.load_balancer_source_ranges if family_of(r) == family)


def plan_service(
    svc: Service,
    allocation: Allocation,
    slices: tuple[EndpointSlice, ...],
    nodes: NodeView,
    config: Config,
    down: frozenset[str] = frozenset(),
) -> tuple[tuple[VirtualService, ...], tuple[Problem, ...]]:
    """Every virtual service of one LoadBalancer Service, and what could not be served.

    `down` are the nodes whose checks for this Service fail (node-wide failures are
    already in `nodes.cluster`)."""
    problems: list[str] = []
    scheduler, why = scheduler_of(svc, config)
    if why:
        problems.append(why)
    forwarding = config.dataplane.forwarding
    persistence = svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else 0
    local = svc.external_traffic_policy == "Local"
    if local and scheduler == "rr" and ANN_SCHEDULER not in svc.annotations:
        # Local weighs each node by its ready pods, and rr ignores weights (IPVS's, and so
        # ours in nftables): the config's rr becomes wrr, the same spread when weights are
        # equal. A Service that asks for rr by annotation gets it.
        scheduler = "wrr"
    out: list[VirtualService] = []
    failing_open = False
    weights: dict[Family, dict[str, dict[str, int]]] = {}  # Local: per family, port, node
    for port in svc.ports:
        real_port = _real_port(svc, port, forwarding)
        if isinstance(real_port, str):
            problems.append(real_port)
            continue
        for vip in allocation.addresses:
            fam = family_of(vip)
            if local:
                if fam not in weights:
                    weights[fam] = local_weights(slices, fam)
                servers = tuple(
                    RealServer(node, nodes.address[(node, fam)], w)
                    for node, w in sorted(weights[fam].get(port.name, {}).items())
                    if (node, fam) in nodes.address
                )
                checked = _weigh(servers, down)
            else:
                servers = nodes.everyone[fam]
                checked = _weigh(nodes.cluster[fam], down)
            if (
                checked is not servers
                and not any(rs.weight for rs in checked)
                and any(rs.weight for rs in servers)
            ):
                checked, failing_open = servers, True
            out.append(
                VirtualService(
                    vip=vip,
                    port=port.port,
                    protocol=port.protocol,
                    scheduler=scheduler,
                    real_port=real_port,
                    real_servers=checked,
                    service=svc.key,
                    port_name=port.name,
                    forwarding=forwarding,
                    persistence_timeout=persistence,
                    source_ranges=source_ranges_for(svc, fam),
                    traffic_policy=svc.external_traffic_policy,
                    health_check_node_port=svc.health_check_node_port if local else None,
                )
            )
    if failing_open:
        problems.append("every real server fails its health check: serving them all (fail open)")
    if svc.load_balancer_source_ranges:
        for fam in {family_of(v) for v in allocation.addresses}:
            if not source_ranges_for(svc, fam):
                problems.append(
                    f"loadBalancerSourceRanges has no {fam} range: its {fam} VIP admits no client"
                )
    return tuple(out), tuple(Problem("Service", svc.key, p) for p in problems)


def _real_port(svc: Service, port: ServicePort, forwarding: str) -> int | str:
    """The nodes' port for a Service port, or why it cannot be served: nat reaches the
    nodes on their NodePort; dr and tun deliver VIP:port unchanged."""
    if forwarding != "nat":
        return port.port
    if port.node_port is not None:
        return port.node_port
    cause = (
        "allocateLoadBalancerNodePorts is false"
        if not svc.allocate_load_balancer_node_ports
        else "the Service has no nodePort for it"
    )
    return (
        f"port {port.name or port.port}/{port.protocol}: not served: nat forwarding "
        f"reaches nodes on their NodePort, and {cause}"
    )

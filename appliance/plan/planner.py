"""plan(): ClusterState + config + previous allocations + health -> DesiredState.

`plan()` is the pure function. `Planner` is the same function with a memory: it keeps
the last allocations (so VIPs stay put across plans) and each Service's result keyed
by the identity of its inputs, so a change to one Service re-plans only that one. The
two always agree; the property tests hold them to it.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

from appliance.address import packed
from appliance.config import Config
from appliance.model import (
    Allocation,
    ClusterState,
    DesiredState,
    EndpointSlice,
    Health,
    Ingress,
    Node,
    Problem,
    Record,
    Service,
    Vip,
    VirtualService,
)
from appliance.plan.ipam import allocate
from appliance.plan.records import ingress_records, service_records
from appliance.plan.services import NodeView, plan_service

_NO_DOWN: frozenset[str] = frozenset()


def is_ours(svc: Service, config: Config) -> bool:
    """A LoadBalancer Service of the class we answer to (MetalLB's rule: without a
    configured class, the Services without one)."""
    return svc.type == "LoadBalancer" and svc.load_balancer_class == (
        config.cluster.load_balancer_class
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    """One Service's plan and the inputs it was made from (compared by identity)."""

    svc: Service
    slices: tuple[EndpointSlice, ...]
    nodes: NodeView | None
    allocation: Allocation | None
    down: frozenset[str]
    virtual_services: tuple[VirtualService, ...]
    problems: tuple[Problem, ...]
    records: tuple[Record, ...]


def _down_by_service(health: Health | None) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    if not health:
        return _NO_DOWN, {}
    nodes: set[str] = set()
    per: dict[str, set[str]] = {}
    for (service, node), up in health.items():
        if up:
            continue
        if service:
            per.setdefault(service, set()).add(node)
        else:
            nodes.add(node)
    return frozenset(nodes), {k: frozenset(v) for k, v in per.items()}


class Planner:
    def __init__(self, config: Config, previous: Mapping[str, Allocation] | None = None) -> None:
        self.config = config
        self.allocations: Mapping[str, Allocation] = dict(previous or {})
        self._alloc_inputs: list[Service] | None = None
        self._alloc_problems: tuple[Problem, ...] = ()
        self._vips: tuple[Vip, ...] = ()
        self._node_inputs: tuple[list[Node], frozenset[str]] | None = None
        self._nodes: NodeView | None = None
        self._entries: dict[str, _Entry] = {}
        self._ingresses: dict[str, tuple[Ingress, tuple[Record, ...], tuple[Problem, ...]]] = {}

    def _allocate(self, ours: list[Service]) -> None:
        cached = self._alloc_inputs
        if (
            cached is not None
            and len(cached) == len(ours)
            and all(a is b or self._caught_up(a, b) for a, b in zip(cached, ours, strict=True))
        ):
            self._alloc_inputs = ours
            return
        allocations, problems = allocate(ours, self.config, self.allocations)
        self.allocations = allocations
        self._alloc_inputs = ours
        self._alloc_problems = tuple(problems)
        self._vips = _vips(allocations)

    def _caught_up(self, old: Service, new: Service) -> bool:
        """Whether `new` is `old` with only its status changed, to the VIPs we gave it.

        That is what our own status write-back looks like when it comes back through the
        watch; allocation is stable under it, so nothing needs allocating again."""
        if old.key != new.key:
            return False
        mine = self.allocations.get(new.key)
        if new.status_ingress_ips != (mine.addresses if mine else ()):
            return False
        unchanged = dataclasses.replace(
            new, status_ingress_ips=old.status_ingress_ips, resource_version=old.resource_version
        )
        return unchanged == old

    def _node_view(self, state: ClusterState, node_down: frozenset[str]) -> NodeView:
        nodes = list(state.nodes.values())
        cached = self._node_inputs
        if (
            self._nodes is not None
            and cached is not None
            and cached[1] == node_down
            and len(cached[0]) == len(nodes)
            and all(a is b for a, b in zip(cached[0], nodes, strict=True))
        ):
            return self._nodes
        self._nodes = NodeView.build(nodes, node_down)
        self._node_inputs = (nodes, node_down)
        return self._nodes

    def _service(
        self,
        svc: Service,
        slices: tuple[EndpointSlice, ...],
        nodes: NodeView,
        down: frozenset[str],
        ours: bool,
    ) -> _Entry:
        allocation = self.allocations.get(svc.key) if ours else None
        planned = nodes if allocation is not None else None
        e = self._entries.get(svc.key)
        if (
            e is not None
            and e.svc is svc
            and (e.slices is slices or e.slices == slices)
            and e.nodes is planned
            and e.allocation == allocation
            and e.down == down
        ):
            return e
        vss: tuple[VirtualService, ...] = ()
        problems: tuple[Problem, ...] = ()
        if allocation is not None:
            vss, problems = plan_service(svc, allocation, slices, nodes, self.config, down)
        named = allocation
        if svc.type == "LoadBalancer" and not ours and svc.status_ingress_ips:
            # Another controller's LoadBalancer: still resolvable, by the address it got.
            named = Allocation(svc.key, svc.status_ingress_ips, ())
        dns = self.config.dns
        records = service_records(svc, named, slices, dns.zones, dns.ttl, dns.cluster_ips)
        e = _Entry(svc, slices, planned, allocation, down, vss, problems, records)
        self._entries[svc.key] = e
        return e

    def _ingress(self, ing: Ingress) -> tuple[tuple[Record, ...], tuple[Problem, ...]]:
        cached = self._ingresses.get(ing.key)
        if cached is not None and cached[0] is ing:
            return cached[1], cached[2]
        records, problems = ingress_records(ing, self.config.dns.zones, self.config.dns.ttl)
        self._ingresses[ing.key] = (ing, records, problems)
        return records, problems

    def plan(self, state: ClusterState, health: Health | None = None) -> DesiredState:
        # A plan allocates up to millions of small acyclic objects; letting the cycle
        # collector walk the whole heap several times meanwhile costs a third of the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._plan(state, health)
        finally:
            if collecting:
                gc.enable()

    def _plan(self, state: ClusterState, health: Health | None) -> DesiredState:
        keys = sorted(state.services)
        services = state.services
        ours = [services[k] for k in keys if is_ours(services[k], self.config)]
        self._allocate(ours)
        node_down, down_by_service = _down_by_service(health)
        nodes = self._node_view(state, node_down)
        no_slices: tuple[EndpointSlice, ...] = ()
        entries: list[_Entry] = []
        for k in keys:
            svc = services[k]
            entries.append(
                self._service(
                    svc,
                    state.endpoint_slices.get(k, no_slices),
                    nodes,
                    down_by_service.get(k, _NO_DOWN),
                    is_ours(svc, self.config),
                )
            )
        if len(self._entries) > len(keys):
            self._entries = {k: self._entries[k] for k in keys if k in self._entries}
        ingress_parts = [self._ingress(state.ingresses[k]) for k in sorted(state.ingresses)]
        records = tuple(
            chain(
                chain.from_iterable(e.records for e in entries),
                chain.from_iterable(r for r, _ in ingress_parts),
            )
        )
        problems = tuple(
            chain(
                self._alloc_problems,
                chain.from_iterable(e.problems for e in entries),
                chain.from_iterable(p for _, p in ingress_parts),
            )
        )
        return DesiredState(
            allocations=self.allocations,
            virtual_services=tuple(chain.from_iterable(e.virtual_services for e in entries)),
            vips=self._vips,
            records=records,
            problems=problems,
            refused=state.refused,
        )


def _vips(allocations: Mapping[str, Allocation]) -> tuple[Vip, ...]:
    owners: dict[str, tuple[str, list[str]]] = {}
    for alloc in allocations.values():
        for address, pool in zip(alloc.addresses, alloc.pools, strict=True):
            owners.setdefault(address, (pool, []))[1].append(alloc.service)
    # Packed bytes sort numerically, IPv4 (AF_INET) before IPv6: cheaper than ipaddress.
    return tuple(
        Vip(address, pool, tuple(sorted(services)))
        for address, (pool, services) in sorted(owners.items(), key=lambda kv: packed(kv[0]))
    )


def plan(
    state: ClusterState,
    config: Config,
    previous: Mapping[str, Allocation] | None = None,
    health: Health | None = None,
) -> DesiredState:
    """The desired state for a cluster snapshot: the pure form of `Planner.plan`."""
    return Planner(config, previous).plan(state, health)

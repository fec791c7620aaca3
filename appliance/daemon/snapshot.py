"""The daemon's state as a `Status` (appliance/status.py): what the page, `/api/v1/state`,
`/metrics` and `appliance status` all show. Built on the loop; the web thread only reads
the result."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from appliance.daemon.loop import Daemon
from appliance.ha.status import HaStatus
from appliance.health.checker import TargetStatus
from appliance.model import DesiredState, VirtualService
from appliance.status import (
    Counters,
    DataplaneStatus,
    DnsStatus,
    Owner,
    RealServerStatus,
    RecentEvent,
    RecordStatus,
    Resigned,
    SavedPlan,
    ServiceStatus,
    SnapshotWriter,
    SourceStatus,
    Status,
    SyncStatus,
    TargetHealth,
    Tracked,
    Transitions,
    VipStatus,
    VirtualServiceStatus,
    VrrpStatus,
)

Statuses = Mapping[tuple[str, str], TargetStatus]
Connections = Mapping[tuple[str, int, str], Mapping[str, int]]


def _vrrp(status: HaStatus | None) -> tuple[VrrpStatus, ...]:
    if status is None:
        return ()
    return tuple(
        VrrpStatus(
            i.name,
            i.vrid,
            i.family,
            i.state,
            i.since,
            i.reason,
            i.master,
            i.priority,
            i.advert_interval,
            i.adverts_in,
            i.adverts_out,
            tuple(i.vips),
            tuple(i.holding),
            dict(i.dropped),
            tuple(i.peers),
            i.restarts,
            i.configured_priority,
        )
        for i in status.instances
    )


def _tracking(daemon: Daemon, status: HaStatus | None) -> tuple[Tracked, ...]:
    """ha.track: every tracked cause, its weight, and what is wrong when it fails."""
    if status is None:
        return ()
    failing = status.failing
    return tuple(
        Tracked(cause, weight, cause in failing, failing.get(cause, ""))
        for cause, weight in daemon.config.ha.track.weights().items()
        if cause != "dataplane" or daemon.parts.dataplane is not None
    )


def _owners(host: str, status: HaStatus | None) -> Callable[[str], Owner]:
    """Who holds a VIP: this host, the peer (as last heard), or nobody. One pass over
    the groups, then a lookup per VIP (50,000 VIPs: not 50,000 scans of a group)."""
    if status is None:
        standalone = Owner(host, None, "standalone", True)
        return lambda address: standalone
    by_vip: dict[str, Owner] = {}
    for i in reversed(status.instances):  # the first instance listing a VIP wins
        peer = i.master if i.state == "backup" and i.master else None
        away = Owner(peer or "unknown", i.name, i.state, False)
        here = Owner(host, i.name, i.state, True)
        held = set(i.holding)
        for address in i.vips:
            by_vip[address] = here if address in held else away
    nobody = Owner("nobody", None, "no VRRP instance", False)
    return lambda address: by_vip.get(address, nobody)


def _vips(daemon: Daemon, desired: DesiredState, ha: HaStatus | None) -> tuple[VipStatus, ...]:
    owner = _owners(daemon.host, ha)
    return tuple(
        VipStatus(v.address, v.pool, tuple(v.services), owner(v.address)) for v in desired.vips
    )


def _health_of(service: str, node: str, statuses: Statuses) -> tuple[str, str]:
    """The verdict and last error for a real server: its own check, else its node's."""
    for key in ((service, node), ("", node)):
        s = statuses.get(key)
        if s is not None:
            return s.verdict, s.last_error
    return "unchecked", ""


def _source(daemon: Daemon) -> SourceStatus:
    """What the source says of itself, the saved snapshot being served (until the
    source's first), and the writer of the live ones."""
    serving, store = daemon.saved, daemon.snapshots
    return SourceStatus(
        dict(daemon.source.status()),
        None if serving is None else SavedPlan(serving.saved_at, serving.services),
        None
        if store is None
        else SnapshotWriter(
            store.path,
            dict(store.writes),
            store.pending,
            store.last_write_at,
            store.last_write_seconds,
            store.last_write_bytes,
        ),
    )


def _virtual_service(
    v: VirtualService, statuses: Statuses, connections: Connections
) -> VirtualServiceStatus:
    active = connections.get(v.key, {})
    servers = []
    for rs in v.real_servers:
        health, error = _health_of(v.service, rs.node, statuses)
        servers.append(
            RealServerStatus(rs.node, rs.address, rs.weight, active.get(rs.address), health, error)
        )
    ranges = None if v.source_ranges is None else tuple(v.source_ranges)
    return VirtualServiceStatus(
        v.vip, v.port_name, v.protocol, v.port, v.real_port, ranges, tuple(servers)
    )


def _services(
    desired: DesiredState, statuses: Statuses, connections: Connections
) -> tuple[ServiceStatus, ...]:
    by_service: dict[str, list[VirtualService]] = {}
    for vs in desired.virtual_services:
        by_service.setdefault(vs.service, []).append(vs)
    out: list[ServiceStatus] = []
    for key in sorted(set(by_service) | set(desired.allocations)):
        vss = by_service.get(key, [])
        alloc = desired.allocations.get(key)
        first = vss[0] if vss else None
        affinity = (
            f"ClientIP {first.persistence_timeout}s"
            if first and first.persistence_timeout
            else "None"
        )
        out.append(
            ServiceStatus(
                key,
                tuple(alloc.addresses) if alloc else tuple(sorted({v.vip for v in vss})),
                tuple(alloc.pools) if alloc else (),
                first.traffic_policy if first else None,
                affinity,
                first.scheduler if first else None,
                first.forwarding if first else None,
                tuple(_virtual_service(v, statuses, connections) for v in vss),
            )
        )
    return tuple(out)


def _records(desired: DesiredState) -> tuple[RecordStatus, ...]:
    return tuple(
        RecordStatus(
            r.name,
            r.rtype,
            r.data if r.rtype != "SRV" else f"{r.priority} {r.weight} {r.port} {r.data}",
            r.ttl,
            r.owner,
        )
        for r in desired.records
    )


@dataclass(frozen=True, slots=True)
class PlanParts:
    """What follows from the plan (with the verdicts and connections): the big parts."""

    services: tuple[ServiceStatus, ...]
    records: tuple[RecordStatus, ...]


def _plan_parts(desired: DesiredState, statuses: Statuses, conns: Connections) -> PlanParts:
    return PlanParts(_services(desired, statuses, conns), _records(desired))


class Snapshots:
    """`build` with a memory: the big parts (Services, records) are rebuilt only when the
    plan or a health verdict changed, so the once-a-second refresh stays cheap at
    thousands of Services."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._key: tuple[object, ...] | None = None
        self._parts: PlanParts | None = None

    def build(self) -> Status:
        return build(self.daemon, self)

    def parts(self, desired: DesiredState, statuses: Statuses, conns: Connections) -> PlanParts:
        verdicts = tuple((k, s.verdict, s.last_error) for k, s in statuses.items())
        # The connections are a new mapping every read (every few seconds), equal to the
        # last one while nothing moved: compared by value, they rebuild only on a change.
        key = (id(desired), desired, verdicts, conns)
        if key != self._key or self._parts is None:
            self._parts = _plan_parts(desired, statuses, conns)
            self._key = key
        return self._parts


def _sync(daemon: Daemon) -> SyncStatus | None:
    s = daemon.last_sync
    if s is None:
        return None
    count = sum(daemon.counters.syncs.values())
    return SyncStatus(s.started, s.seconds, s.changed, s.summary, tuple(s.errors), count)


def _dataplane(daemon: Daemon) -> DataplaneStatus | None:
    if daemon.parts.dataplane is None:
        return None
    report = daemon.report
    return DataplaneStatus(
        daemon.parts.dataplane.name,
        report.summary() if report else None,
        tuple(report.draining) if report else (),
        daemon.connections_at,
    )


def _health(statuses: tuple[TargetStatus, ...]) -> tuple[TargetHealth, ...]:
    return tuple(
        TargetHealth(
            s.target.service,
            s.target.node,
            s.target.endpoint,
            s.verdict,
            s.since,
            s.last_error,
            s.checks,
        )
        for s in statuses
    )


def _dns(daemon: Daemon) -> DnsStatus | None:
    if daemon.parts.dns is None:
        return None
    d = daemon.parts.dns.stats()
    return DnsStatus(
        d.serial,
        d.record_count,
        tuple(d.zones),
        tuple(d.listening),
        dict(d.queries),
        tuple(d.problems),
    )


def _counters(daemon: Daemon, ha: HaStatus | None) -> Counters:
    c, health = daemon.counters, daemon.parts.health
    return Counters(
        dict(c.syncs),
        dict(c.reloads),
        tuple(Transitions(i, s, n) for (i, s), n in sorted(c.vrrp_transitions.items())),
        c.source_restarts,
        dict(health.results) if health is not None else {},
        ha.garps_sent if ha is not None else 0,
    )


def _resigned(daemon: Daemon) -> tuple[Resigned, ...]:
    return tuple(
        Resigned(r.instance, r.since, r.until, r.reason()) for r in daemon.resignations.held()
    )


def _events(daemon: Daemon) -> tuple[RecentEvent, ...]:
    return tuple(RecentEvent(e.time, e.level, e.message) for e in reversed(daemon.events))


def _planned(
    status: Status,
    daemon: Daemon,
    ha: HaStatus | None,
    statuses: Statuses,
    cache: Snapshots | None,
) -> Status:
    """The status with what the plan says: VIPs and owners, Services, records, refusals
    and problems. Before the first plan, all of them are empty."""
    desired = daemon.desired
    if desired is None:
        return status
    conns = daemon.connections
    parts = (
        cache.parts(desired, statuses, conns) if cache else _plan_parts(desired, statuses, conns)
    )
    return replace(
        status,
        vips=_vips(daemon, desired, ha),
        services=parts.services,
        records=parts.records,
        refused=desired.refused,
        problems=(*desired.problems, *daemon.health_problems),
    )


def build(daemon: Daemon, cache: Snapshots | None = None) -> Status:
    """The whole picture. Immutable, so cached parts are shared between snapshots."""
    p = daemon.parts
    ha = p.speaker.status() if p.speaker is not None else None
    statuses = p.health.statuses() if p.health is not None else ()
    status = Status(
        host=daemon.host,
        now=time.time(),
        started=daemon.started,
        ready=daemon.ready,
        config=daemon.config.source,
        restart_needed=tuple(daemon.restart_needed),
        source=_source(daemon),
        sync=_sync(daemon),
        dataplane=_dataplane(daemon),
        vrrp=_vrrp(ha),
        tracking=_tracking(daemon, ha),
        resigned=_resigned(daemon),
        health=_health(statuses),
        dns=_dns(daemon),
        events=_events(daemon),
        counters=_counters(daemon, ha),
    )
    return _planned(status, daemon, ha, {s.target.key: s for s in statuses}, cache)

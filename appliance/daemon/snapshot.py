"""The daemon's state as plain data: what the page, `/api/v1/state`, `/metrics` and
`appliance status` all show. Built on the loop; the web thread only reads the result."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from appliance.daemon.loop import Daemon
from appliance.ha.status import HaStatus
from appliance.health.checker import TargetStatus
from appliance.model import DesiredState, VirtualService

API_VERSION = "v1"


def _vrrp(status: HaStatus | None) -> list[dict[str, Any]]:
    if status is None:
        return []
    return [
        {
            "instance": i.name,
            "vrid": i.vrid,
            "family": i.family,
            "state": i.state,
            "since": i.since,
            "reason": i.reason,
            "master": i.master,
            "priority": i.priority,
            "advert_interval": i.advert_interval,
            "adverts_in": i.adverts_in,
            "adverts_out": i.adverts_out,
            "vips": list(i.vips),
            "holding": list(i.holding),
            "dropped": dict(i.dropped),
            "peers": list(i.peers),
            "restarts": i.restarts,
            "configured_priority": i.configured_priority,
        }
        for i in status.instances
    ]


def _tracking(daemon: Daemon, status: HaStatus | None) -> list[dict[str, Any]]:
    """ha.track: every tracked cause, its weight, and what is wrong when it fails."""
    if status is None:
        return []
    failing = status.failing
    return [
        {"cause": cause, "weight": weight, "failing": cause in failing,
         "reason": failing.get(cause, "")}
        for cause, weight in daemon.config.ha.track.weights().items()
        if cause != "dataplane" or daemon.parts.dataplane is not None
    ]  # fmt: skip


def _owners(host: str, status: HaStatus | None) -> Callable[[str], dict[str, Any]]:
    """Who holds a VIP: this host, the peer (as last heard), or nobody. One pass over
    the groups, then a lookup per VIP (50,000 VIPs: not 50,000 scans of a group)."""
    if status is None:
        standalone = {"host": host, "instance": None, "state": "standalone", "here": True}
        return lambda address: dict(standalone)
    by_vip: dict[str, dict[str, Any]] = {}
    for i in reversed(status.instances):  # the first instance listing a VIP wins
        peer = i.master if i.state == "backup" and i.master else None
        away = {"host": peer or "unknown", "instance": i.name, "state": i.state, "here": False}
        here = {"host": host, "instance": i.name, "state": i.state, "here": True}
        held = set(i.holding)
        for address in i.vips:
            by_vip[address] = here if address in held else away
    nobody = {"host": "nobody", "instance": None, "state": "no VRRP instance", "here": False}
    return lambda address: dict(by_vip.get(address, nobody))


def _health_of(
    service: str, node: str, statuses: Mapping[tuple[str, str], TargetStatus]
) -> tuple[str, str]:
    """The verdict and last error for a real server: its own check, else its node's."""
    for key in ((service, node), ("", node)):
        s = statuses.get(key)
        if s is not None:
            return s.verdict, s.last_error
    return "unchecked", ""


def _saved(daemon: Daemon) -> dict[str, Any]:
    """What the source section says about the saved snapshot: the one being served (until
    the source's first), and the writer of the live ones."""
    serving, store = daemon.saved, daemon.snapshots
    return {
        "saved_plan": None
        if serving is None
        else {"saved_at": serving.saved_at, "services": serving.services},
        "saved_state": None
        if store is None
        else {
            "file": store.path,
            "writes": dict(store.writes),
            "pending": store.pending,
            "last_write_time": store.last_write_at,
            "last_write_seconds": store.last_write_seconds,
            "last_write_bytes": store.last_write_bytes,
        },
    }


Connections = Mapping[tuple[str, int, str], Mapping[str, int]]


def _services(
    desired: DesiredState,
    statuses: Mapping[tuple[str, str], TargetStatus],
    connections: Connections,
) -> list[dict[str, Any]]:
    by_service: dict[str, list[VirtualService]] = {}
    for vs in desired.virtual_services:
        by_service.setdefault(vs.service, []).append(vs)
    out: list[dict[str, Any]] = []
    for key in sorted(set(by_service) | set(desired.allocations)):
        vss = by_service.get(key, [])
        alloc = desired.allocations.get(key)
        first = vss[0] if vss else None
        out.append(
            {
                "key": key,
                "vips": list(alloc.addresses) if alloc else sorted({v.vip for v in vss}),
                "pools": list(alloc.pools) if alloc else [],
                "policy": first.traffic_policy if first else None,
                "affinity": (
                    f"ClientIP {first.persistence_timeout}s"
                    if first and first.persistence_timeout
                    else "None"
                ),
                "scheduler": first.scheduler if first else None,
                "forwarding": first.forwarding if first else None,
                "ports": [
                    {
                        "vip": v.vip,
                        "name": v.port_name,
                        "protocol": v.protocol,
                        "port": v.port,
                        "real_port": v.real_port,
                        "source_ranges": (
                            None if v.source_ranges is None else list(v.source_ranges)
                        ),
                        "real_servers": [
                            {
                                "node": rs.node,
                                "address": rs.address,
                                "weight": rs.weight,
                                # None: not read (yet), or the backend could not say
                                "active_connections": connections.get(v.key, {}).get(rs.address),
                                "health": _health_of(key, rs.node, statuses)[0],
                                "error": _health_of(key, rs.node, statuses)[1],
                            }
                            for rs in v.real_servers
                        ],
                    }
                    for v in vss
                ],
            }
        )
    return out


class Snapshots:
    """`build` with a memory: the big parts (Services, records) are rebuilt only when the
    plan or a health verdict changed, so the once-a-second refresh stays cheap at
    thousands of Services."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._key: tuple[object, ...] | None = None
        self._parts: dict[str, Any] = {}

    def build(self) -> dict[str, Any]:
        return build(self.daemon, self)

    def parts(
        self,
        desired: DesiredState,
        statuses: Mapping[tuple[str, str], TargetStatus],
        connections: Connections,
    ) -> dict[str, Any]:
        verdicts = tuple((k, s.verdict, s.last_error) for k, s in statuses.items())
        # The connections are a new mapping every read (every few seconds), equal to the
        # last one while nothing moved: compared by value, they rebuild only on a change.
        key = (id(desired), desired, verdicts, connections)
        if key != self._key:
            self._parts = _plan_parts(desired, statuses, connections)
            self._key = key
        return self._parts


def _plan_parts(
    desired: DesiredState,
    statuses: Mapping[tuple[str, str], TargetStatus],
    connections: Connections,
) -> dict[str, Any]:
    return {
        "services": _services(desired, statuses, connections),
        "records": [
            {
                "name": r.name,
                "type": r.rtype,
                "data": r.data
                if r.rtype != "SRV"
                else f"{r.priority} {r.weight} {r.port} {r.data}",
                "ttl": r.ttl,
                "owner": r.owner,
            }
            for r in desired.records
        ],
        "refused": [str(r) for r in desired.refused],
    }


def build(daemon: Daemon, cache: Snapshots | None = None) -> dict[str, Any]:
    """The whole picture, JSON-ready. The page's copy is never mutated, so cached parts
    may be shared between snapshots."""
    p = daemon.parts
    ha = p.speaker.status() if p.speaker is not None else None
    statuses_list = p.health.statuses() if p.health is not None else ()
    statuses = {s.target.key: s for s in statuses_list}
    desired = daemon.desired
    dns = p.dns.stats() if p.dns is not None else None
    sync = daemon.last_sync
    data: dict[str, Any] = {
        "api": API_VERSION,
        "host": daemon.host,
        "now": time.time(),
        "started": daemon.started,
        "ready": daemon.ready,
        "config": daemon.config.source,
        "restart_needed": list(daemon.restart_needed),
        "source": {**daemon.source.status(), **_saved(daemon)},
        "sync": None
        if sync is None
        else {
            "time": sync.started,
            "duration_seconds": sync.seconds,
            "changed": sync.changed,
            "summary": sync.summary,
            "errors": list(sync.errors),
            "count": sum(daemon.counters.syncs.values()),
        },
        "dataplane": None
        if p.dataplane is None
        else {
            "backend": p.dataplane.name,
            "last": daemon.report.summary() if daemon.report else None,
            "draining": list(daemon.report.draining) if daemon.report else [],
            "connections_time": daemon.connections_at,
        },
        "vrrp": _vrrp(ha),
        "tracking": _tracking(daemon, ha),
        "resigned": daemon.resignations.listing(),
        "vips": [],
        "services": [],
        "records": [],
        "refused": [],
        "problems": [],
        "health": [
            {
                "service": s.target.service,
                "node": s.target.node,
                "endpoint": s.target.endpoint,
                "verdict": s.verdict,
                "since": s.since,
                "last_error": s.last_error,
                "checks": s.checks,
            }
            for s in statuses_list
        ],
        "dns": None
        if dns is None
        else {
            "serial": dns.serial,
            "records": dns.record_count,
            "zones": list(dns.zones),
            "listening": list(dns.listening),
            "queries": dict(dns.queries),
            "problems": list(dns.problems),
        },
        "events": [
            {"time": e.time, "level": e.level, "message": e.message}
            for e in reversed(daemon.events)
        ],
        "counters": {
            "syncs": dict(daemon.counters.syncs),
            "reloads": dict(daemon.counters.reloads),
            "vrrp_transitions": [
                {"instance": i, "state": s, "count": n}
                for (i, s), n in sorted(daemon.counters.vrrp_transitions.items())
            ],
            "source_restarts": daemon.counters.source_restarts,
            "health_checks": dict(p.health.results) if p.health is not None else {},
            "garps_sent": ha.garps_sent if ha is not None else 0,
        },
    }
    if desired is not None:
        owner = _owners(daemon.host, ha)
        data["vips"] = [
            {
                "address": v.address,
                "pool": v.pool,
                "services": list(v.services),
                "owner": owner(v.address),
            }
            for v in desired.vips
        ]
        conns = daemon.connections
        parts = (
            cache.parts(desired, statuses, conns)
            if cache
            else _plan_parts(desired, statuses, conns)
        )
        data.update(parts)
        data["problems"] = [str(x) for x in (*desired.problems, *daemon.health_problems)]
    return data

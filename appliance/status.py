"""What the daemon knows, as types: the one status the page, `/metrics`, `/api/v1/state`
and the tests read. Pure data, like `model`: no I/O and no import of an adapter, so the
daemon builds it (`daemon/snapshot.py`) and the web reads it without either importing
the other.

The JSON API is made here, once, at the edge (`to_json`): its keys are the field names in
field order, so a field added here appears in `/api/v1/state` as it is named. Problems and
refusals are the model's own types and go out as their one-line text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from appliance.model import Problem, Refusal

API_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a VIP: this host, the peer (as last heard), or nobody."""

    host: str  # this host's name, the master's address, "unknown" or "nobody"
    instance: str | None  # the VRRP instance whose group lists the VIP
    state: str  # that instance's state, "standalone" or "no VRRP instance"
    here: bool


@dataclass(frozen=True, slots=True)
class VipStatus:
    address: str
    pool: str
    services: tuple[str, ...]
    owner: Owner


@dataclass(frozen=True, slots=True)
class VrrpStatus:
    """One VRRP instance, as its speaker reports it."""

    instance: str
    vrid: int
    family: str
    state: str  # initialize | backup | master | fault
    since: float
    reason: str
    master: str | None
    priority: int  # as advertised: the configured one, less tracking
    advert_interval: float
    adverts_in: int
    adverts_out: int
    vips: tuple[str, ...]
    holding: tuple[str, ...]
    dropped: Mapping[str, int]  # adverts by reason
    peers: tuple[str, ...]
    restarts: int
    configured_priority: int


@dataclass(frozen=True, slots=True)
class Tracked:
    """One cause of `ha.track`, its weight, and what is wrong while it fails."""

    cause: str  # dataplane | source | interface <name>
    weight: int
    failing: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Resigned:
    """An instance the operator holds back (`appliance ha resign`)."""

    instance: str
    since: float
    until: float | None  # None: until resumed
    reason: str


@dataclass(frozen=True, slots=True)
class RealServerStatus:
    node: str
    address: str
    weight: int
    active_connections: int | None  # None: not read (yet), or the backend could not say
    health: str  # up | down | unknown | unchecked
    error: str


@dataclass(frozen=True, slots=True)
class VirtualServiceStatus:
    """VIP:port/protocol of a Service and the real servers behind it."""

    vip: str
    name: str
    protocol: str
    port: int
    real_port: int
    source_ranges: tuple[str, ...] | None  # None: every client; empty: nobody
    real_servers: tuple[RealServerStatus, ...]


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A LoadBalancer Service: its VIPs and its virtual services."""

    key: str
    vips: tuple[str, ...]
    pools: tuple[str, ...]
    policy: str | None  # externalTrafficPolicy; None without a virtual service
    affinity: str  # "None" or "ClientIP <timeout>s"
    scheduler: str | None
    forwarding: str | None
    ports: tuple[VirtualServiceStatus, ...]


@dataclass(frozen=True, slots=True)
class RecordStatus:
    name: str
    type: str
    data: str  # SRV: "priority weight port target"
    ttl: int
    owner: str


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """One health check target and its verdict."""

    service: str  # "" for a node-wide check
    node: str
    endpoint: str
    verdict: str
    since: float
    last_error: str
    checks: int


@dataclass(frozen=True, slots=True)
class DnsStatus:
    serial: int
    records: int
    zones: tuple[str, ...]
    listening: tuple[str, ...]
    queries: Mapping[str, int]  # by rcode
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecentEvent:
    time: float
    level: str  # info | warning | error
    message: str


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """The last pass of the loop, and how many there were."""

    time: float
    duration_seconds: float
    changed: bool
    summary: str
    errors: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class DataplaneStatus:
    backend: str
    last: str | None  # the last apply's summary
    draining: tuple[str, ...]  # real servers at weight 0 waiting for their connections
    connections_time: float | None  # when the active connections were read


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """The saved snapshot being served until the source's first."""

    saved_at: float
    services: int


@dataclass(frozen=True, slots=True)
class SnapshotWriter:
    """The writer of the live snapshots (last-state.json)."""

    file: str
    writes: Mapping[str, int]  # ok | skipped | failed
    pending: bool
    last_write_time: float | None
    last_write_seconds: float | None
    last_write_bytes: int | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What the cluster source says of itself (its own keys, which differ by kind: a
    folder, or the API's reflectors), and the saved snapshot. In JSON, one object."""

    reported: Mapping[str, Any] = field(default_factory=dict)
    saved_plan: SavedPlan | None = None
    saved_state: SnapshotWriter | None = None

    @property
    def relists(self) -> int:
        """The reflectors' relists, summed (0 for a source without reflectors)."""
        return sum(r.get("relists", 0) for r in self.reported.get("resources", ()))


@dataclass(frozen=True, slots=True)
class Transitions:
    instance: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class Counters:
    """Monotonic counts since start."""

    syncs: Mapping[str, int] = field(default_factory=dict)  # ok | error
    reloads: Mapping[str, int] = field(default_factory=dict)  # ok | refused
    vrrp_transitions: tuple[Transitions, ...] = ()
    source_restarts: int = 0
    health_checks: Mapping[str, int] = field(default_factory=dict)  # ok | failed
    garps_sent: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """The whole picture. The defaults are a daemon that knows nothing yet."""

    api: str = API_VERSION
    host: str = ""
    now: float = 0.0
    started: float = 0.0
    ready: bool = False
    config: str = ""
    restart_needed: tuple[str, ...] = ()
    source: SourceStatus = field(default_factory=SourceStatus)
    sync: SyncStatus | None = None
    dataplane: DataplaneStatus | None = None
    vrrp: tuple[VrrpStatus, ...] = ()
    tracking: tuple[Tracked, ...] = ()
    resigned: tuple[Resigned, ...] = ()
    vips: tuple[VipStatus, ...] = ()
    services: tuple[ServiceStatus, ...] = ()
    records: tuple[RecordStatus, ...] = ()
    refused: tuple[Refusal, ...] = ()
    problems: tuple[Problem, ...] = ()
    health: tuple[TargetHealth, ...] = ()
    dns: DnsStatus | None = None
    events: tuple[RecentEvent, ...] = ()  # newest first
    counters: Counters = field(default_factory=Counters)

    @property
    def virtual_services(self) -> tuple[VirtualServiceStatus, ...]:
        return tuple(p for svc in self.services for p in svc.ports)


# --- the JSON API ---------------------------------------------------------------------------


def to_json(status: Status) -> dict[str, Any]:
    """`/api/v1/state`: plain data for `json.dumps`, keys in field order."""
    out = _encode(status)
    assert isinstance(out, dict)
    return out


_PLAIN = (str, int, float, bool, type(None))


def _encode(value: Any) -> Any:
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is not None:  # the status types: by far the most values, so asked first
        return {name: _encode(getattr(value, name)) for name in names}
    if cls in _PLAIN:
        return value
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, SourceStatus):  # the source's keys, then the saved snapshot's
        return {
            **_encode(value.reported),
            "saved_plan": _encode(value.saved_plan),
            "saved_state": _encode(value.saved_state),
        }
    if isinstance(value, Problem | Refusal):
        return str(value)
    if isinstance(value, str | int | float):  # a subclass: an enum, a numpy number
        return value
    raise TypeError(f"no JSON for {cls.__name__}")


# Each status type of this module as JSON: its fields, in order (SourceStatus merges the
# source's own keys in, so it has its own rule).
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in list(globals().values())
    if isinstance(cls, type)
    and is_dataclass(cls)
    and cls.__module__ == __name__
    and cls is not SourceStatus
}

"""What the loop keeps of its own history, and the words it uses: the page's recent events,
one record per sync, the counters /metrics reads. Pure: the loop decides when."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.dataplane.base import ApplyReport
from appliance.health.state import Verdict
from appliance.health.targets import Target
from appliance.model import DesiredState


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the page's "recent events"."""

    time: float  # wall clock
    level: str  # info | warning | error
    message: str


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """What one pass of the loop did."""

    started: float  # wall clock
    seconds: float
    changed: bool  # the dataplane changed
    summary: str
    errors: tuple[str, ...] = ()


@dataclass(slots=True)
class Counters:
    """Monotonic counts since start, for /metrics."""

    syncs: Counter[str] = field(default_factory=Counter)  # by result: ok | error
    reloads: Counter[str] = field(default_factory=Counter)  # ok | refused
    vrrp_transitions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (inst, to)
    source_restarts: int = 0


def summary(desired: DesiredState) -> str:
    """A plan in one line: the sync log's, the first event's and systemd's READY status."""
    services = len({vs.service for vs in desired.virtual_services})
    return (
        f"{len(desired.vips)} VIPs, {services} services, "
        f"{len(desired.virtual_services)} virtual services, {len(desired.records)} records, "
        f"{len(desired.refused)} refused, {len(desired.problems)} problems"
    )


def plan_events(
    before: DesiredState | None, desired: DesiredState, changed: ApplyReport | None
) -> Iterator[tuple[str, str]]:
    """(level, message) for a new plan: the first one in a line, then the VIPs that came
    and went, and the dataplane's change if it made one (`changed`)."""
    if before is None:
        yield "info", f"first sync: {summary(desired)}"
        return
    old, new = {v.address for v in before.vips}, {v.address for v in desired.vips}
    for vip in sorted(new - old):
        yield "info", f"VIP {vip} added"
    for vip in sorted(old - new):
        yield "info", f"VIP {vip} removed"
    if changed is not None:
        yield "info", f"dataplane: {changed.summary()}"


def health_event(
    target: Target, before: Verdict, after: Verdict, error: str
) -> tuple[str, str] | None:
    """(level, message) for a verdict change; None for a first verdict of up (not news:
    the checker logs it at debug only)."""
    if after != "down" and before != "down":
        return None
    what = f"{target.service} on {target.node}" if target.service else f"node {target.node}"
    if after == "down":
        return "warning", f"health: {what} is down: {error}"
    return "info", f"health: {what} is up again"

"""The scheduler: checks every target on its own jittered interval, bounded in flight,
and turns results into rise/fall verdicts, the `Health` the planner takes, and a status
per target for the page.

Meant to be driven by the daemon:

    checker = HealthChecker(on_change=mark_dirty)
    checker.update(derive_targets(state, desired, config.health).targets)  # after each plan
    task = asyncio.create_task(checker.run())
    ... planner.plan(state, checker.health()) ...                          # on each plan
    checker.statuses()                                                     # for the page

Due times sit in a wheel of 10 ms buckets with one loop timer, for the earliest bucket:
at 10,000 checks/s a heap entry, a future and a timer per check cost a third of the CPU.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from appliance.health.probe import Probe, Prober
from appliance.health.state import Streak, Verdict, first_due, next_due, observe
from appliance.health.targets import Target, same_probe
from appliance.health.verdict import Outcome
from appliance.logs import keyvalue_logger

log = keyvalue_logger("appliance.health")

DEFAULT_MAX_IN_FLIGHT = 1024
LATENESS_SAMPLES = 100_000
TICK = 0.01  # seconds: the wheel's bucket; a check starts at most this late (when idle)

Transition = Callable[[Target, Verdict, Verdict, str], None]
"""Told of each verdict change: (target, before, after, last error)."""


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What the status page shows for one target. Times are wall clock (time.time())."""

    target: Target
    verdict: Verdict
    since: float  # when the verdict last changed (or the target appeared)
    last_check: float | None
    last_ok: bool | None
    last_error: str
    last_latency: float | None  # seconds
    checks: int
    changes: int


class _Slot:
    """One target's mutable bookkeeping, private to the checker."""

    __slots__ = (
        "changes",
        "checks",
        "dead",
        "due",
        "finished",
        "gen",
        "in_flight",
        "key",
        "last_check",
        "last_error",
        "last_latency",
        "last_ok",
        "probe",
        "since",
        "streak",
        "target",
    )

    def __init__(self, target: Target, probe: Probe, since: float, gen: int) -> None:
        self.target = target
        self.probe = probe
        self.key = target.key
        self.streak = Streak()
        self.since = since
        self.gen = gen  # a new slot per probed thing: results of an older one drop
        self.dead = False  # replaced or removed: its place in the wheel is skipped
        self.due = 0.0
        self.in_flight = False
        self.finished: Callable[[Outcome], None] = lambda _: None  # set by the checker
        self.last_check: float | None = None
        self.last_ok: bool | None = None
        self.last_error = ""
        self.last_latency: float | None = None
        self.checks = 0
        self.changes = 0


def _now() -> float:
    # The running loop's clock when there is one (the wheel is in its time); asyncio's
    # default loop uses the monotonic clock, the same as this fallback.
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class HealthChecker:
    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        on_change: Callable[[], None] | None = None,
        on_transition: Transition | None = None,
        prober: Prober | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.on_change = on_change
        self.on_transition = on_transition
        self.prober = prober or Prober()
        self.rng = rng or random.Random()
        self.wall = wall
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._wheel: dict[int, list[_Slot]] = {}  # bucket -> slots due in it
        self._buckets: list[int] = []  # heap of the wheel's buckets
        self._backlog: deque[_Slot] = deque()  # due, waiting for a place in flight
        self._loop: asyncio.AbstractEventLoop | None = None  # while run() runs
        self._timer: asyncio.TimerHandle | None = None
        self._timer_bucket = -1
        self._ticking = False
        self._gen = 0
        self._in_flight = 0
        self._health: dict[tuple[str, str], bool] | None = None
        self.checks = 0
        self.skipped = 0  # due while the previous check of the target was still running
        self.transitions: Counter[tuple[Verdict, Verdict]] = Counter()
        self.lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)  # seconds past due

    # --- what to check -------------------------------------------------------------------

    def update(self, targets: Iterable[Target]) -> None:
        """Replace the set of targets. Kept targets keep their verdicts and schedule; new
        ones start unknown (counted as up) and are first checked within one interval."""
        now = _now()
        wanted = {t.key: t for t in targets}
        gone = [k for k in self._slots if k not in wanted]
        changed_health = False
        for k in gone:
            old = self._slots.pop(k)
            old.dead = True
            self.prober.forget(k)
            changed_health |= old.streak.verdict != "unknown"
        for k, t in wanted.items():
            slot = self._slots.get(k)
            if slot is not None and slot.target == t:
                continue
            if slot is not None and same_probe(slot.target, t):
                slot.target = t  # new timing applies from the next check
                slot.probe = self.prober.probe(t)
                continue
            if slot is not None:
                slot.dead = True
                self.prober.forget(k)
                changed_health |= slot.streak.verdict != "unknown"
            self._gen += 1
            slot = self._slots[k] = _Slot(t, self.prober.probe(t), self.wall(), self._gen)
            slot.finished = partial(self._finished, slot)
            self._push(slot, first_due(now, t.interval, self.rng))
        if changed_health:
            self._health = None
            self._notify()
        self._schedule()

    def targets(self) -> tuple[Target, ...]:
        return tuple(s.target for s in self._slots.values())

    # --- results -------------------------------------------------------------------------

    def health(self) -> Mapping[tuple[str, str], bool]:
        """The planner's input: decided verdicts only (unknown stays absent, i.e. up)."""
        if self._health is None:
            self._health = {
                k: s.streak.verdict == "up"
                for k, s in self._slots.items()
                if s.streak.verdict != "unknown"
            }
        return self._health

    def statuses(self) -> tuple[TargetStatus, ...]:
        return tuple(
            TargetStatus(
                s.target,
                s.streak.verdict,
                s.since,
                s.last_check,
                s.last_ok,
                s.last_error,
                s.last_latency,
                s.checks,
                s.changes,
            )
            for _, s in sorted(self._slots.items())
        )

    def record(self, key: tuple[str, str], gen: int, outcome: Outcome) -> None:
        """Fold one check result into its target's verdict (ignored if the target has
        changed or gone since the check started)."""
        slot = self._slots.get(key)
        if slot is None or slot.gen != gen:
            return
        t = slot.target
        slot.checks += 1
        slot.last_check = self.wall()
        ok = outcome.ok
        slot.last_ok = ok
        slot.last_latency = outcome.latency
        if not ok:
            slot.last_error = outcome.error
        before = slot.streak
        after = slot.streak = observe(before, ok, t.rise, t.fall)
        if after.verdict != before.verdict:
            self._changed(slot, before.verdict, after.verdict)

    def _changed(self, slot: _Slot, before: Verdict, after: Verdict) -> None:
        """One verdict change: logged once, counted once, told once."""
        t = slot.target
        slot.since = slot.last_check or self.wall()
        slot.changes += 1
        self.transitions[(before, after)] += 1
        self._health = None
        # The sentence is what an operator reads (docs/health.md); the keys are for grep.
        what = f"{t.service or '(node)'} on {t.node} ({t.endpoint})"
        keys = {"service": t.service, "node": t.node, "endpoint": t.endpoint, "verdict": after}
        if after == "down":
            error = slot.last_error
            log.warning(
                f"health: {what} is down after {t.fall} failures: {error}",
                failures=t.fall,
                error=error,
                **keys,
            )
        elif before == "down":
            log.info(
                f"health: {what} is up again after {t.rise} successes", successes=t.rise, **keys
            )
        else:
            log.debug(f"health: {what} is up", **keys)
        if self.on_transition is not None:
            self.on_transition(t, before, after, slot.last_error)
        if after == "down" or before == "down":
            self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- the loop ------------------------------------------------------------------------

    def _push(self, slot: _Slot, due: float) -> None:
        slot.due = due
        bucket = math.ceil(due / TICK)  # checks due in ((b-1) x TICK, b x TICK] start at b
        slots = self._wheel.get(bucket)
        if slots is None:
            slots = self._wheel[bucket] = []
            heapq.heappush(self._buckets, bucket)
        slots.append(slot)

    def _schedule(self) -> None:
        """Have the loop call _tick at the earliest bucket (one timer at a time)."""
        loop = self._loop
        if loop is None or self._ticking:
            return
        if self._backlog and self._in_flight < self.max_in_flight:
            first = 0  # at once
        elif self._buckets:
            first = self._buckets[0]
        else:
            return
        if self._timer is not None:
            if self._timer_bucket <= first:
                return
            self._timer.cancel()
        self._timer_bucket = first
        self._timer = loop.call_at(first * TICK, self._tick)

    async def run(self) -> None:
        """Check until cancelled; closes every connection on the way out."""
        loop = self._loop = asyncio.get_running_loop()
        self._schedule()
        try:
            await loop.create_future()  # the work is done by _tick, on the loop's timer
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._loop = None
            await self.prober.aclose()  # checks in progress end unreported: none in flight
            self._in_flight = 0
            for slot in self._slots.values():
                slot.in_flight = False

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        self._ticking = True
        try:
            now = loop.time()
            self._drain(now)
            buckets, wheel = self._buckets, self._wheel
            last = math.floor(now / TICK + 1e-6)  # a timer may fire a hair early
            limit = self.max_in_flight
            while buckets and buckets[0] <= last:
                for slot in wheel.pop(heapq.heappop(buckets)):
                    if slot.dead:
                        continue
                    if self._in_flight >= limit:
                        self._backlog.append(slot)
                    else:
                        self._start(slot, now)
        finally:
            self._ticking = False
        self._schedule()

    def _drain(self, now: float) -> None:
        """Start checks that were due while every place in flight was taken."""
        backlog = self._backlog
        while backlog and self._in_flight < self.max_in_flight:
            slot = backlog.popleft()
            if not slot.dead:
                self._start(slot, now)

    def _start(self, slot: _Slot, now: float) -> None:
        due = slot.due
        t = slot.target
        self._push(slot, next_due(due, now, t.interval, self.rng))
        if slot.in_flight:
            self.skipped += 1
            return
        self.lateness.append(now - due)
        slot.in_flight = True
        self._in_flight += 1
        slot.probe.check(slot.finished)

    def _finished(self, slot: _Slot, outcome: Outcome) -> None:
        slot.in_flight = False
        self._in_flight -= 1
        self.checks += 1
        self.record(slot.key, slot.gen, outcome)
        if self._backlog and not self._ticking and self._loop is not None:
            self._ticking = True  # a refused connect may finish inside _start: no recursion
            try:
                self._drain(self._loop.time())
            finally:
                self._ticking = False
            self._schedule()

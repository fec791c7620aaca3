"""The scheduler: checks every target on its own jittered interval, bounded in flight,
and turns results into rise/fall verdicts, the `Health` the planner takes, and a status
per target for the page.

Meant to be driven by the daemon:

    checker = HealthChecker(on_change=mark_dirty)
    checker.update(derive_targets(state, desired, config.health).targets)  # after each plan
    task = asyncio.create_task(checker.run())
    ... planner.plan(state, checker.health()) ...                          # on each plan
    checker.statuses()                                                     # for the page
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from appliance.health.probe import Outcome, Prober
from appliance.health.state import Streak, Verdict, first_due, next_due, observe
from appliance.health.targets import Target

log = logging.getLogger("appliance.health")

DEFAULT_MAX_IN_FLIGHT = 1024
LATENESS_SAMPLES = 100_000


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
        "due",
        "gen",
        "in_flight",
        "last_check",
        "last_error",
        "last_latency",
        "last_ok",
        "since",
        "streak",
        "target",
    )

    def __init__(self, target: Target, since: float, gen: int) -> None:
        self.target = target
        self.streak = Streak()
        self.since = since
        self.gen = gen  # bumped when the target changes: stale heap entries and results drop
        self.due = 0.0
        self.in_flight = False
        self.last_check: float | None = None
        self.last_ok: bool | None = None
        self.last_error = ""
        self.last_latency: float | None = None
        self.checks = 0
        self.changes = 0


def _now() -> float:
    # The running loop's clock when there is one (the heap is in its time); asyncio's
    # default loop uses the monotonic clock, the same as this fallback.
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _same_probe(a: Target, b: Target) -> bool:
    """Whether results about `a` still say something about `b` (timing may differ)."""
    return (a.kind, a.address, a.port, a.path, a.expect, a.body) == (
        b.kind,
        b.address,
        b.port,
        b.path,
        b.expect,
        b.body,
    )


class HealthChecker:
    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        on_change: Callable[[], None] | None = None,
        prober: Prober | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.on_change = on_change
        self.prober = prober or Prober()
        self.rng = rng or random.Random()
        self.wall = wall
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._heap: list[tuple[float, int, tuple[str, str], int]] = []
        self._seq = 0
        self._gen = 0
        self._in_flight = 0
        self._wake: asyncio.Future[None] | None = None
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
            self.prober.forget(k)
            self.prober.drop_request(old.target)
            changed_health |= old.streak.verdict != "unknown"
        for k, t in wanted.items():
            slot = self._slots.get(k)
            if slot is not None and slot.target == t:
                continue
            if slot is not None and _same_probe(slot.target, t):
                self.prober.drop_request(slot.target)
                slot.target = t  # new timing applies from the next check
                continue
            if slot is not None:
                self.prober.forget(k)
                self.prober.drop_request(slot.target)
                changed_health |= slot.streak.verdict != "unknown"
            self._gen += 1
            slot = self._slots[k] = _Slot(t, self.wall(), self._gen)
            self._push(slot, first_due(now, t.interval, self.rng))
        if changed_health:
            self._health = None
            self._notify()
        self._poke()

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
        slot.last_ok = outcome.ok
        slot.last_latency = outcome.latency
        if not outcome.ok:
            slot.last_error = outcome.error
        before = slot.streak.verdict
        slot.streak = observe(slot.streak, outcome.ok, t.rise, t.fall)
        after = slot.streak.verdict
        if after == before:
            return
        slot.since = slot.last_check
        slot.changes += 1
        self.transitions[(before, after)] += 1
        self._health = None
        what = f"{t.service or '(node)'} on {t.node} ({t.endpoint})"
        if after == "down":
            log.warning("health: %s is down after %d failures: %s", what, t.fall, outcome.error)
        elif before == "down":
            log.info("health: %s is up again after %d successes", what, t.rise)
        else:
            log.debug("health: %s is up", what)
        if after == "down" or before == "down":
            self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- the loop ------------------------------------------------------------------------

    def _push(self, slot: _Slot, due: float) -> None:
        slot.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, slot.target.key, slot.gen))

    def _poke(self) -> None:
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    async def run(self) -> None:
        """Check until cancelled; closes every connection on the way out."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._start_due(loop)
                self._wake = loop.create_future()
                timer = None
                if self._heap and self._in_flight < self.max_in_flight:
                    timer = loop.call_at(self._heap[0][0], self._poke)
                try:
                    await self._wake
                finally:
                    if timer is not None:
                        timer.cancel()
                    self._wake = None
        finally:
            await self.prober.aclose()

    def _start_due(self, loop: asyncio.AbstractEventLoop) -> None:
        heap = self._heap
        now = loop.time()
        while heap and heap[0][0] <= now and self._in_flight < self.max_in_flight:
            due, _, key, gen = heapq.heappop(heap)
            slot = self._slots.get(key)
            if slot is None or slot.gen != gen:
                continue
            self._push(slot, next_due(due, now, slot.target.interval, self.rng))
            if slot.in_flight:
                self.skipped += 1
                continue
            self.lateness.append(now - due)
            slot.in_flight = True
            self._in_flight += 1
            self.prober.start(slot.target, partial(self._finished, slot, slot.target.key, gen))

    def _finished(self, slot: _Slot, key: tuple[str, str], gen: int, outcome: Outcome) -> None:
        slot.in_flight = False
        self._in_flight -= 1
        if self._in_flight == self.max_in_flight - 1:
            self._poke()  # the loop may be waiting for a free place
        self.checks += 1
        self.record(key, gen, outcome)

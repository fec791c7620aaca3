"""Rise/fall verdicts and check timing. Pure: no clock, no I/O.

A target starts `unknown`, which the planner treats as up (absent from Health): a node
is not drained before it was ever checked. `fall` consecutive failures make it `down`,
`rise` consecutive successes make it `up`; a single odd result in a streak only resets
the count, so a flapping backend holds its state (keepalived's and HAProxy's rule).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["unknown", "up", "down"]

JITTER = 0.1
"""Each interval is stretched or shrunk by up to this share, at random, so targets
added together drift apart instead of being checked in one burst forever."""


@dataclass(frozen=True, slots=True)
class Streak:
    """The verdict and the run of equal results behind it: > 0 successes, < 0 failures."""

    verdict: Verdict = "unknown"
    run: int = 0


def observe(streak: Streak, ok: bool, rise: int, fall: int) -> Streak:
    """The streak after one more check result."""
    if ok:
        run = streak.run + 1 if streak.run > 0 else 1
        if streak.verdict != "up" and run >= rise:
            return Streak("up", run)
    else:
        run = streak.run - 1 if streak.run < 0 else -1
        if streak.verdict != "down" and -run >= fall:
            return Streak("down", run)
    return Streak(streak.verdict, run)


def first_due(now: float, interval: float, rng: random.Random) -> float:
    """When a new target is first checked: somewhere in the next interval, so that
    thousands of targets that appear in one plan do not all go at once."""
    return now + rng.random() * interval


def next_due(due: float, now: float, interval: float, rng: random.Random) -> float:
    """The check after the one that was due at `due`: one jittered interval later,
    counted from when it was due (not when it finished) so slow checks do not drift the
    schedule; if the loop fell more than an interval behind, from now instead of
    firing a burst of catch-up checks."""
    step = interval * (1.0 + JITTER * (2.0 * rng.random() - 1.0))
    nxt = due + step
    return nxt if nxt > now else now + step

"""Rise/fall verdicts and check timing, on a fake clock (pure functions, no sleeping)."""

from __future__ import annotations

import random

import pytest

from appliance.health.state import JITTER, Streak, first_due, next_due, observe


def run(results: str, rise: int = 2, fall: int = 3, start: Streak | None = None) -> str:
    """Feed '+'/'-' results; return the verdict after each as u(p)/d(own)/?(unknown)."""
    s = start or Streak()
    out = []
    for r in results:
        s = observe(s, r == "+", rise, fall)
        out.append({"up": "u", "down": "d", "unknown": "?"}[s.verdict])
    return "".join(out)


@pytest.mark.parametrize(
    ("results", "verdicts"),
    [
        ("++++", "?uuu"),  # rise 2: up on the second success
        ("---", "??d"),  # fall 3: down on the third failure
        ("+++--+--+", "?uuuuuuuu"),  # failures in pairs never reach fall: no flapping
        ("+-+-+-", "??????"),  # nor successes one at a time reach rise
        ("++---++", "?uuuddu"),
        ("++--+---", "?uuuuuud"),  # a success in the middle resets the failure count
        ("---+-++", "??dddd" + "u"),  # a failure resets the success count
    ],
)
def test_rise_fall_sequences(results: str, verdicts: str) -> None:
    assert run(results) == verdicts


def test_rise_and_fall_of_one_follow_every_result() -> None:
    assert run("+-+-", rise=1, fall=1) == "udud"


def test_a_flapping_backend_keeps_its_state() -> None:
    rng = random.Random(7)
    # Up, then a long random stream where failures never come three in a row.
    results = "++"
    while len(results) < 500:
        r = rng.choice("+-")
        results += "+" if results.endswith("--") else r
    assert results.count("-") > 100
    assert "d" not in run(results)


def test_run_counts_are_signed_streaks() -> None:
    s = Streak()
    for ok in (True, True, True):
        s = observe(s, ok, 2, 3)
    assert s == Streak("up", 3)
    s = observe(s, False, 2, 3)
    assert s == Streak("up", -1)


def test_first_checks_spread_over_one_interval() -> None:
    rng = random.Random(1)
    dues = [first_due(100.0, 2.0, rng) for _ in range(10_000)]
    assert all(100.0 <= d < 102.0 for d in dues)
    # Spread, not bunched: every tenth of the interval gets a share.
    buckets = {int((d - 100.0) / 0.2) for d in dues}
    assert buckets == set(range(10))


def test_next_due_stays_within_the_jitter_bounds() -> None:
    rng = random.Random(2)
    steps = []
    due = 0.0
    for _ in range(10_000):
        nxt = next_due(due, due + 0.001, 1.0, rng)
        steps.append(nxt - due)
        due = nxt
    assert min(steps) >= 1.0 - JITTER
    assert max(steps) <= 1.0 + JITTER
    assert max(steps) - min(steps) > JITTER  # it does vary
    assert abs(sum(steps) / len(steps) - 1.0) < 0.01  # on average, the interval


def test_next_due_counts_from_due_not_from_completion() -> None:
    rng = random.Random(3)
    # A check that was due at 10.0 and started late at 10.4 is next due ~11.0, not ~11.4.
    nxt = next_due(10.0, 10.4, 1.0, rng)
    assert 10.9 <= nxt <= 11.1


def test_next_due_after_a_stall_does_not_burst() -> None:
    rng = random.Random(4)
    # The loop stalled 5 intervals: the next check is one interval from now, not in the past.
    nxt = next_due(10.0, 15.0, 1.0, rng)
    assert 15.9 <= nxt <= 16.1

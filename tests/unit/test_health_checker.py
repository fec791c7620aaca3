"""The scheduler on a real loop with a stand-in prober (no sockets): bounded in flight,
the backlog served in order, checks that finish before `check()` returns, skipped turns,
and verdicts that drop when their target changed."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from appliance.health.checker import HealthChecker
from appliance.health.targets import Target
from appliance.health.verdict import Outcome


def target(i: int, interval: float = 0.05, port: int = 8080) -> Target:
    return Target(f"shop/s{i}", "node-1", "http", "127.0.0.1", port, interval, 0.5 * interval, 1, 2)


class FakeProbe:
    def __init__(self, owner: FakeProber, t: Target) -> None:
        self.owner = owner
        self.target = t
        self.done: Callable[[Outcome], None] | None = None

    def check(self, done: Callable[[Outcome], None]) -> None:
        o = self.owner
        assert self.done is None, "two checks of one target at once"
        self.done = done
        o.running += 1
        o.peak = max(o.peak, o.running)
        o.started[self.target.key] += 1
        if o.delay is None:  # answered before check() returns, like a refused connect
            self.finish()
        else:
            asyncio.get_running_loop().call_later(o.delay, self.finish)

    def finish(self) -> None:
        done, self.done = self.done, None
        if done is not None:
            self.owner.running -= 1
            done(Outcome(self.owner.ok, "" if self.owner.ok else "connection refused"))


class FakeProber:
    def __init__(self, delay: float | None = 0.0, ok: bool = True) -> None:
        self.delay = delay
        self.ok = ok
        self.running = 0
        self.peak = 0
        self.started: Counter[tuple[str, str]] = Counter()
        self.probes: dict[tuple[str, str], FakeProbe] = {}

    def probe(self, t: Target) -> FakeProbe:
        p = self.probes.get(t.key)
        if p is None or p.target.port != t.port:
            p = self.probes[t.key] = FakeProbe(self, t)
        p.target = t
        return p

    def forget(self, key: tuple[str, str]) -> None:
        p = self.probes.pop(key, None)
        if p is not None:
            p.finish()  # as the real one: a check in progress ends

    async def aclose(self) -> None:
        pass


def run_for(checker: HealthChecker, seconds: float, during: Awaitable[None] | None = None) -> None:
    async def go() -> None:
        task = asyncio.create_task(checker.run())
        if during is not None:
            await during
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def make(prober: FakeProber, **kw: int) -> HealthChecker:
    return HealthChecker(prober=prober, rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_no_more_checks_in_flight_than_allowed_and_every_target_gets_its_turn() -> None:
    prober = FakeProber(delay=0.1)  # each check outlasts the 50 ms interval
    checker = make(prober, max_in_flight=3)
    checker.update(target(i) for i in range(12))
    run_for(checker, 1.0)
    assert prober.peak == 3
    assert set(prober.started) == {target(i).key for i in range(12)}
    assert min(prober.started.values()) >= 2  # the backlog is served in order, no starving
    assert checker.checks == sum(prober.started.values()) - prober.running


def test_checks_that_finish_inside_check_neither_recurse_nor_leak_places() -> None:
    prober = FakeProber(delay=None, ok=False)
    checker = make(prober, max_in_flight=1)
    checker.update(target(i) for i in range(200))
    run_for(checker, 0.4)
    assert prober.peak == 1 and prober.running == 0
    assert min(prober.started.values()) >= 3
    assert checker.health() == {target(i).key: False for i in range(200)}  # fall 2
    assert checker.transitions == Counter({("unknown", "down"): 200})


def test_a_check_still_running_when_due_again_skips_its_turn() -> None:
    prober = FakeProber(delay=0.17)  # three to four intervals
    checker = make(prober)
    checker.update([target(0)])
    run_for(checker, 0.8)
    assert prober.peak == 1
    assert checker.skipped >= 4
    assert 2 <= checker.checks <= 5  # never two at once: at most 0.8 / 0.17
    assert all(late >= -1e-6 for late in checker.lateness)


def test_a_target_changed_during_its_check_starts_over_and_the_old_result_drops() -> None:
    prober = FakeProber(delay=0.02, ok=False)
    checker = make(prober)
    checker.update([target(0)])

    async def change() -> None:
        while checker.health() != {target(0).key: False}:
            await asyncio.sleep(0.005)
        prober.ok = True
        checker.update([target(0, port=9090)])  # another port: another thing probed
        assert checker.health() == {}  # unknown again, counted as up

    run_for(checker, 0.3, change())
    assert checker.health() == {target(0).key: True}
    (status,) = checker.statuses()
    assert status.target.port == 9090 and status.verdict == "up" and status.changes == 1


def test_new_timing_keeps_the_verdict() -> None:
    prober = FakeProber(delay=0.0, ok=False)
    checker = make(prober)
    checker.update([target(0)])

    async def retime() -> None:
        while checker.health() != {target(0).key: False}:
            await asyncio.sleep(0.005)
        checker.update([target(0, interval=0.03)])
        assert checker.health() == {target(0).key: False}

    run_for(checker, 0.1, retime())
    assert checker.transitions == Counter({("unknown", "down"): 1})
    assert checker.targets()[0].interval == 0.03


def test_each_change_is_logged_once_counted_once_and_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prober = FakeProber(delay=0.0, ok=True)
    told: list[tuple[str, str, str]] = []
    checker = HealthChecker(
        prober=prober,  # type: ignore[arg-type]
        rng=random.Random(1),
        on_transition=lambda t, before, after, error: told.append((before, after, error)),
    )
    checker.update([target(0)])

    async def flip() -> None:
        async def until(verdict: bool) -> None:
            while checker.health() != {target(0).key: verdict}:
                await asyncio.sleep(0.005)

        await until(True)
        prober.ok = False
        await until(False)
        prober.ok = True
        await until(True)

    with caplog.at_level(logging.INFO, logger="appliance.health"):
        run_for(checker, 0.2, flip())
    assert told == [
        ("unknown", "up", ""),
        ("up", "down", "connection refused"),
        ("down", "up", "connection refused"),
    ]
    assert [r.getMessage().split(" is ")[1] for r in caplog.records] == [
        "down after 2 failures: connection refused",
        "up again after 1 successes",
    ]
    assert checker.transitions == Counter(
        {("unknown", "up"): 1, ("up", "down"): 1, ("down", "up"): 1}
    )


def test_a_change_logs_its_sentence_and_its_keys(caplog: pytest.LogCaptureFixture) -> None:
    checker = HealthChecker(prober=FakeProber(), rng=random.Random(1))  # type: ignore[arg-type]
    t = target(0)
    checker.update([t])
    with caplog.at_level(logging.INFO, logger="appliance.health"):
        for _ in range(t.fall):
            checker.record(t.key, 1, Outcome(False, "connection refused"))
    (down,) = caplog.records
    assert down.getMessage() == (
        "health: shop/s0 on node-1 (http://127.0.0.1:8080/) is down after 2 failures: "
        "connection refused"
    )
    keys = ("service", "node", "endpoint", "verdict", "failures", "error")
    assert {k: getattr(down, k) for k in keys} == {
        "service": "shop/s0",
        "node": "node-1",
        "endpoint": "http://127.0.0.1:8080/",
        "verdict": "down",
        "failures": 2,
        "error": "connection refused",
    }

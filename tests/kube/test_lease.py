"""Two LB hosts, one Lease: one writer at a time, takeover when the holder stops
renewing or steps down, a 409 for the loser of a race."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable

from appliance.kube.api import Connection, KubeApi
from appliance.kube.lease import LeaseElector
from tests.support.fake_apiserver import FakeApiServer

T0 = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)


class Clocks:
    """A wall clock and a monotonic one that move together."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def mono(self) -> float:
        return self.seconds

    def wall(self) -> datetime.datetime:
        return T0 + datetime.timedelta(seconds=self.seconds)


def run(
    test: Callable[[FakeApiServer, LeaseElector, LeaseElector, Clocks], Awaitable[None]],
) -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
            clocks = Clocks()
            async with KubeApi(Connection(fake.url, token=fake.token)) as api:
                a, b = (
                    LeaseElector(api, "appliance-system", who, clock=clocks.mono, wall=clocks.wall)
                    for who in ("lb-a", "lb-b")
                )
                await asyncio.wait_for(test(fake, a, b, clocks), 20)

    asyncio.run(main())


def test_first_one_holds_the_other_follows() -> None:
    async def t(fake: FakeApiServer, a: LeaseElector, b: LeaseElector, clocks: Clocks) -> None:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        assert a.is_leader() and not b.is_leader()
        lease = fake.get("leases", "appliance-system", "appliance-status-writer")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "lb-a"
        assert lease["spec"]["leaseDurationSeconds"] == 15
        clocks.seconds += 5
        assert await a.try_acquire()  # renews
        assert not await b.try_acquire()

    run(t)


def test_a_holder_that_stops_renewing_is_replaced_after_the_duration() -> None:
    async def t(fake: FakeApiServer, a: LeaseElector, b: LeaseElector, clocks: Clocks) -> None:
        assert await a.try_acquire()
        clocks.seconds += 10
        assert not a.is_leader()  # it stops counting itself before the Lease expires
        assert not await b.try_acquire()
        clocks.seconds += 6  # 16 s since the last renewal
        assert await b.try_acquire()
        lease = fake.get("leases", "appliance-system", "appliance-status-writer")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "lb-b"
        assert lease["spec"]["leaseTransitions"] == 1
        assert not await a.try_acquire()

    run(t)


def test_release_hands_over_at_once() -> None:
    async def t(fake: FakeApiServer, a: LeaseElector, b: LeaseElector, clocks: Clocks) -> None:
        assert await a.try_acquire()
        await a.release()
        assert not a.is_leader()
        assert await b.try_acquire()

    run(t)


def test_the_loser_of_a_race_gets_409_and_follows() -> None:
    async def t(fake: FakeApiServer, a: LeaseElector, b: LeaseElector, clocks: Clocks) -> None:
        assert await a.try_acquire()
        clocks.seconds += 20  # expired: both may try
        results = await asyncio.gather(a.try_acquire(), b.try_acquire())
        assert sorted(results) == [False, True]
        holder = fake.get("leases", "appliance-system", "appliance-status-writer")
        assert holder is not None
        winner = a if holder["spec"]["holderIdentity"] == "lb-a" else b
        loser = b if winner is a else a
        assert winner.is_leader() and not loser.is_leader()
        if loser is b:
            assert "409" in b.last_error

    run(t)


def test_unreachable_api_keeps_the_hold_only_until_it_runs_out() -> None:
    async def t(fake: FakeApiServer, a: LeaseElector, b: LeaseElector, clocks: Clocks) -> None:
        assert await a.try_acquire()
        await fake.stop()
        clocks.seconds += 5
        assert await a.try_acquire()  # still within its hold
        assert a.last_error
        clocks.seconds += 6
        assert not await a.try_acquire()

    run(t)

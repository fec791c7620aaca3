"""Faults: the API server killed and restarted mid-watch, a slow one, one that times
out, an hour-long outage. The last good state stays in force throughout (no snapshot,
so no VIP change) and the source resyncs when the server is back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.kube.harness import watching
from tests.kube.objects import node, service
from tests.support.fake_apiserver import FakeApiServer


def run(test: Callable[[FakeApiServer], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        async with FakeApiServer(bookmark_interval=0.2) as fake:
            await asyncio.wait_for(test(fake), timeout)

    asyncio.run(main())


FAST = {"backoff_base": 0.05, "backoff_max": 0.2}


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll rather than sleep a fixed time: a loaded machine is slow, not wrong."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def seed(fake: FakeApiServer) -> None:
    fake.create("nodes", node("n1", "198.18.0.11"))
    fake.create("services", service("web"))
    fake.create("services", service("db"))


def test_server_killed_and_restarted_mid_watch() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake, **FAST) as w:
            first = await w.until(lambda s: True)
            await fake.stop()

            def failing() -> bool:
                return {st.kind: st for st in w.source.status()}["Service"].failures >= 2

            await eventually(failing)  # several failed reconnects
            assert len(w.snapshots) == 1
            assert w.source.state is first
            status = {st.kind: st for st in w.source.status()}
            assert not status["Service"].watching and status["Service"].failures >= 2
            assert status["Service"].last_error
            fake.delete("services", "default", "db")  # changed while the API was away
            fake.create("services", service("new"))
            await fake.start()
            state = await w.until(lambda s: "default/new" in s.services)
            assert "default/db" not in state.services
            assert state.services["default/web"] is first.services["default/web"]

    run(t)


def test_slow_server_still_converges() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        fake.delay = 1.0  # seconds before every response
        async with watching(fake, **FAST) as w:
            state = await w.until(lambda s: True, timeout=15)
            assert sorted(state.services) == ["default/db", "default/web"]
            fake.create("services", service("later"))
            await w.until(lambda s: "default/later" in s.services, timeout=15)

    run(t)


def test_server_slower_than_the_timeout_keeps_the_last_state() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        api_kw = {"request_timeout": 0.3, "watch_idle_timeout": 0.3}
        async with watching(fake, api_kw, **FAST) as w:
            first = await w.until(lambda s: True)
            fake.delay = 1.0
            fake.drop_watches()
            fake.create("services", service("hidden"))
            await eventually(lambda: any("timed out" in st.last_error for st in w.source.status()))
            assert w.source.state is first and len(w.snapshots) == 1
            fake.delay = 0.0
            await w.until(lambda s: "default/hidden" in s.services)

    run(t)


def test_an_hour_of_outage_changes_nothing_and_resyncs() -> None:
    """Virtual time: the source's backoff sleeps on a clock that runs an hour in well
    under a second; the server is really down all along."""
    virtual = {"now": 0.0, "longest": 0.0, "sleeps": 0}

    async def sleep(seconds: float) -> None:
        virtual["now"] += seconds
        virtual["longest"] = max(virtual["longest"], seconds)
        virtual["sleeps"] += 1
        await asyncio.sleep(0.0005)

    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake, backoff_base=0.2, backoff_max=30.0, sleep=sleep) as w:
            first = await w.until(lambda s: True)
            await fake.stop()
            while virtual["now"] < 4 * 3600:  # four reflectors share the clock: 1 h each
                await asyncio.sleep(0.01)
            assert w.source.state is first and len(w.snapshots) == 1
            assert 15.0 <= virtual["longest"] <= 30.0  # backed off, up to the ceiling
            # Not a tight loop: about an hour / (15..30 s) per reflector.
            assert virtual["sleeps"] < 4 * 3600 / 15 + 40
            fake.create("services", service("back"))
            await fake.start()
            state = await w.until(lambda s: "default/back" in s.services)
            assert state.services["default/web"] is first.services["default/web"]

    run(t)

"""The checker against real HTTP servers on loopback (aiohttp's server, acting as kube-proxy
on three "nodes" at 127.0.0.11-13): started, stopped, made slow, made to answer 503 and
kube-proxy-style JSON. The weights plan() gives follow the servers, without flapping.

Waits are bounded generously (a slow CI machine must not fail them); what is asserted is
the outcome and the exact number of state changes, never a duration.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from appliance.config import HealthConfig
from appliance.health.checker import HealthChecker
from appliance.health.targets import derive_targets
from appliance.model import ClusterState, DesiredState
from appliance.plan import plan
from tests.health.backends import Backend, free_port
from tests.unit.builders import config, ep, lb, node, slice_, state

NODE_ADDRESSES = {"node-1": "127.0.0.11", "node-2": "127.0.0.12", "node-3": "127.0.0.13"}
HC = HealthConfig(interval=0.1, timeout=0.05, rise=2, fall=3)
WAIT = 10.0  # seconds: an upper bound for "within interval x threshold", never reached


@dataclass
class Lab:
    checker: HealthChecker
    state: ClusterState
    local: dict[str, Backend]  # node -> the Local Service's healthCheckNodePort server
    proxy: dict[str, Backend]  # node -> kube-proxy's node healthz server
    changes: list[int]

    def desired(self) -> DesiredState:
        return plan(self.state, config(), health=self.checker.health())

    def weights(self, service: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for vs in self.desired().virtual_services:
            if vs.service == service:
                out.update({rs.node: rs.weight for rs in vs.real_servers})
        return out

    async def until(self, what: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not what():
            assert asyncio.get_running_loop().time() < deadline, "condition never held"
            await asyncio.sleep(0.01)


@asynccontextmanager
async def lab(hc: HealthConfig = HC, local_body: str | None = None) -> AsyncIterator[Lab]:
    addresses = list(NODE_ADDRESSES.values())
    hcnp = free_port(addresses)
    proxy_port = free_port(addresses)
    nodes = [node(n, a) for n, a in NODE_ADDRESSES.items()]
    echo = lb("echo", external_traffic_policy="Local", health_check_node_port=hcnp)
    web = lb("web", age=1)
    sl = slice_("echo", *(ep(f"198.18.64.{i}", n) for i, n in enumerate(NODE_ADDRESSES, 1)))
    st = state(echo, web, slices=[sl], nodes=nodes)
    local = {n: Backend(a, hcnp, local_body) for n, a in NODE_ADDRESSES.items()}
    proxy = {n: Backend(a, proxy_port) for n, a in NODE_ADDRESSES.items()}
    changes: list[int] = []
    checker = HealthChecker(rng=random.Random(5), on_change=lambda: changes.append(1))
    try:
        for b in (*local.values(), *proxy.values()):
            await b.start()
        targets = derive_targets(st, plan(st, config()), hc, kube_proxy_port=proxy_port)
        assert len(targets.targets) == 6
        checker.update(targets.targets)
        task = asyncio.create_task(checker.run())
        try:
            yield Lab(checker, st, local, proxy, changes)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        for b in (*local.values(), *proxy.values()):
            await b.stop()


def all_up(lab_: Lab) -> bool:
    return len(lab_.checker.health()) == 6 and all(lab_.checker.health().values())


def transitions(lab_: Lab) -> dict[str, int]:
    return {f"{a}->{b}": n for (a, b), n in sorted(lab_.checker.transitions.items())}


def test_local_service_follows_kube_proxy_json() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            assert t.weights("shop/echo") == {"node-1": 1, "node-2": 1, "node-3": 1}
            # node-2 loses its local pod: kube-proxy answers 503 {"localEndpoints": 0}.
            t.local["node-2"].b.mode = "503"
            await t.until(lambda: t.weights("shop/echo")["node-2"] == 0)
            assert t.weights("shop/echo") == {"node-1": 1, "node-2": 0, "node-3": 1}
            assert t.weights("shop/web") == {"node-1": 1, "node-2": 1, "node-3": 1}
            (st,) = [s for s in t.checker.statuses() if s.target.key == ("shop/echo", "node-2")]
            assert st.verdict == "down"
            assert st.last_error == "503: no local endpoints"
            assert st.last_latency is not None and st.last_latency > 0
            # The pod is back.
            t.local["node-2"].b.mode = "ok"
            await t.until(lambda: t.weights("shop/echo")["node-2"] == 1)
            assert transitions(t) == {"down->up": 1, "unknown->up": 6, "up->down": 1}
            assert len(t.changes) == 2  # the daemon is told twice: down, up

    asyncio.run(go())


def test_200_with_zero_local_endpoints_is_down() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            t.local["node-1"].b.local_endpoints = 0
            await t.until(lambda: t.checker.health()[("shop/echo", "node-1")] is False)
            (st,) = [s for s in t.checker.statuses() if s.target.key == ("shop/echo", "node-1")]
            assert st.last_error == "200 but localEndpoints is 0"

    asyncio.run(go())


def test_cluster_service_drains_a_node_whose_kube_proxy_is_dead() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            await t.proxy["node-3"].stop()
            await t.until(lambda: t.weights("shop/web")["node-3"] == 0)
            assert t.weights("shop/web") == {"node-1": 1, "node-2": 1, "node-3": 0}
            # A node-wide failure does not touch the Local Service's own check.
            assert t.weights("shop/echo") == {"node-1": 1, "node-2": 1, "node-3": 1}
            (st,) = [s for s in t.checker.statuses() if s.target.key == ("", "node-3")]
            assert st.last_error == "connection refused"
            await t.proxy["node-3"].start()
            await t.until(lambda: t.weights("shop/web")["node-3"] == 1)
            assert transitions(t) == {"down->up": 1, "unknown->up": 6, "up->down": 1}

    asyncio.run(go())


def test_node_being_deleted_answers_503_and_is_drained() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            t.proxy["node-1"].b.mode = "503"
            await t.until(lambda: t.weights("shop/web")["node-1"] == 0)
            (st,) = [s for s in t.checker.statuses() if s.target.key == ("", "node-1")]
            assert st.last_error == "503: kube-proxy unhealthy or node being deleted"

    asyncio.run(go())


def test_a_slow_server_times_out_and_recovers() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            t.local["node-1"].b.mode = "slow"
            t.local["node-1"].b.delay = 0.3  # the timeout is 0.05 s
            await t.until(lambda: t.weights("shop/echo")["node-1"] == 0)
            (st,) = [s for s in t.checker.statuses() if s.target.key == ("shop/echo", "node-1")]
            assert st.last_error == "timeout after 0.05s"
            t.local["node-1"].b.mode = "ok"
            await t.until(lambda: t.weights("shop/echo")["node-1"] == 1)
            assert transitions(t) == {"down->up": 1, "unknown->up": 6, "up->down": 1}

    asyncio.run(go())


def test_every_node_down_fails_open_and_says_so() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            for b in t.local.values():
                b.b.mode = "503"
            await t.until(lambda: sum(not up for up in t.checker.health().values()) == 3)
            assert t.weights("shop/echo") == {"node-1": 1, "node-2": 1, "node-3": 1}
            assert [str(p) for p in t.desired().problems] == [
                "Service shop/echo: every real server fails its health check: "
                "serving them all (fail open)"
            ]

    asyncio.run(go())


def test_a_flapping_server_does_not_flap_the_weights() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            t.local["node-1"].b.mode = "flap"
            before = t.local["node-1"].b.requests
            seen: set[int] = set()

            def enough() -> bool:
                seen.add(t.weights("shop/echo")["node-1"])
                return t.local["node-1"].b.requests - before >= 20

            await t.until(enough)
            assert seen == {1}
            assert transitions(t) == {"unknown->up": 6}

    asyncio.run(go())


def test_connections_are_kept_alive_between_checks() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: t.proxy["node-1"].b.requests >= 10)
            assert len(t.proxy["node-1"].b.connections) == 1

    asyncio.run(go())


def test_connection_close_and_chunked_answers_are_understood() -> None:
    async def go() -> None:
        async with lab() as t:
            t.local["node-1"].b.mode = "close"
            t.local["node-2"].b.mode = "chunked"
            t.local["node-2"].b.local_endpoints = 3
            await t.until(lambda: t.local["node-1"].b.requests >= 5)
            await t.until(lambda: t.local["node-2"].b.requests >= 5)
            await t.until(lambda: all_up(t))
            assert len(t.local["node-1"].b.connections) >= 5  # a new one each time
            assert len(t.local["node-2"].b.connections) == 1
            t.local["node-2"].b.local_endpoints = 0
            await t.until(lambda: t.checker.health()[("shop/echo", "node-2")] is False)

    asyncio.run(go())


def test_removed_targets_leave_the_health_map() -> None:
    async def go() -> None:
        async with lab() as t:
            await t.until(lambda: all_up(t))
            keep = [x for x in t.checker.targets() if x.service == ""]
            t.checker.update(keep)
            assert set(t.checker.health()) == {("", n) for n in NODE_ADDRESSES}
            assert {s.target.key for s in t.checker.statuses()} == set(t.checker.health())

    asyncio.run(go())

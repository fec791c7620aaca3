"""One check at a time against real servers on loopback: TCP connect, HTTP with an
expected status and body, IPv6, and a server that drops idle kept-alive connections."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

from aiohttp import web

from appliance.health.probe import Prober
from appliance.health.targets import Target
from tests.health.backends import Backend, free_port


def target(kind: str, address: str, port: int, **kw: Any) -> Target:
    base = Target("shop/web", "node-1", kind, address, port, 1.0, 0.5, 2, 3)  # type: ignore[arg-type]
    return replace(base, **kw)


def test_tcp_connect() -> None:
    async def go() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        prober = Prober()
        try:
            up = await prober.check(target("tcp", "127.0.0.1", port))
            assert (up.ok, up.error) == (True, "")
        finally:
            listener.close()
        down = await prober.check(target("tcp", "127.0.0.1", port))
        assert (down.ok, down.error) == (False, "connection refused")

    asyncio.run(go())


def test_http_expected_status_and_body() -> None:
    async def go() -> None:
        port = free_port(["127.0.0.1"])
        b = Backend("127.0.0.1", port, body="status: ready")
        await b.start()
        prober = Prober()
        try:
            ok = await prober.check(target("http", "127.0.0.1", port, body="ready"))
            assert (ok.ok, ok.error) == (True, "")
            miss = await prober.check(target("http", "127.0.0.1", port, body="green"))
            assert (miss.ok, miss.error) == (False, "body does not contain 'green'")
            b.b.mode = "503"
            bad = await prober.check(target("http", "127.0.0.1", port, expect=(200, 204)))
            assert (bad.ok, bad.error) == (False, "HTTP 503 (expected 200,204)")
            fine = await prober.check(target("http", "127.0.0.1", port, expect=(503,)))
            assert fine.ok
        finally:
            prober.close()
            await b.stop()

    asyncio.run(go())


def test_ipv6_loopback() -> None:
    async def go() -> None:
        port = free_port(["::1"])
        b = Backend("::1", port)
        await b.start()
        prober = Prober()
        try:
            r = await prober.check(target("kube-proxy", "::1", port))
            assert (r.ok, r.error) == (True, "")
        finally:
            prober.close()
            await b.stop()

    asyncio.run(go())


def test_a_server_dropping_idle_connections_causes_no_false_failure() -> None:
    async def go() -> None:
        requests = 0

        async def handle(_: web.Request) -> web.Response:
            nonlocal requests
            requests += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.02)
        await runner.setup()
        port = free_port(["127.0.0.1"])
        await web.TCPSite(runner, "127.0.0.1", port).start()
        prober = Prober()
        try:
            t = target("http", "127.0.0.1", port)
            results = []
            for i in range(30):
                results.append(await prober.check(t))
                # Around the server's idle timeout: some connections are gone, some going.
                await asyncio.sleep(0.01 + (i % 5) * 0.005)
            assert [r.error for r in results if not r.ok] == []
            assert requests == 30
        finally:
            prober.close()
            await runner.cleanup()

    asyncio.run(go())


def test_a_silent_listener_times_out() -> None:
    async def go() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (in the kernel), never answers
        prober = Prober()
        try:
            t = target("kube-proxy-node", "127.0.0.1", listener.getsockname()[1], timeout=0.05)
            r = await prober.check(t)
            assert (r.ok, r.error) == (False, "timeout after 0.05s")
        finally:
            prober.close()
            listener.close()

    asyncio.run(go())

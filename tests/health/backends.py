"""Real HTTP servers on loopback that act like kube-proxy's health endpoints, built on
aiohttp's server (independent of our client code), and switchable while a test runs."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

Mode = Literal["ok", "503", "slow", "flap", "close", "chunked"]


@dataclass
class Behaviour:
    mode: Mode = "ok"
    local_endpoints: int = 1
    delay: float = 1.0  # for "slow"
    requests: int = 0
    connections: set[int] = field(default_factory=set)  # peer ports seen


class Backend:
    """One HTTP server on `address:port`; `behaviour` says how it answers right now."""

    def __init__(self, address: str, port: int, body: str | None = None) -> None:
        self.address = address
        self.port = port
        self.body = body
        self.b = Behaviour()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        b = self.b
        b.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            b.connections.add(peer[1])
        mode = b.mode
        if mode == "flap":  # every other answer fails
            mode = "ok" if b.requests % 2 else "503"
        if mode == "slow":
            await asyncio.sleep(b.delay)
        n = b.local_endpoints if mode != "503" else 0
        # kube-proxy's own layout (service_health.go): hand-printed, tab-indented JSON.
        doc = (
            '{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "echo"\n\t},\n'
            f'\t"localEndpoints": {n},\n\t"serviceProxyHealthy": true\n}}'
        )
        text = self.body if self.body is not None else doc
        status = 503 if mode == "503" else 200
        if mode == "chunked":
            resp = web.StreamResponse(status=status)
            resp.enable_chunked_encoding()
            resp.content_type = "application/json"
            await resp.prepare(request)
            half = len(text) // 2
            await resp.write(text[:half].encode())
            await resp.write(text[half:].encode())
            await resp.write_eof()
            return resp
        headers = {"Connection": "close"} if mode == "close" else {}
        return web.Response(
            status=status, text=text, content_type="application/json", headers=headers
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.address, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def free_port(addresses: list[str]) -> int:
    """A port free on every one of `addresses` (so each node can have "the same" port)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        socks = []
        try:
            for a in addresses:
                s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
                socks.append(s)
                s.bind((a, port))
            return port
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")

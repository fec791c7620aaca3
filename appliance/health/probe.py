"""The checks themselves: TCP connect, and HTTP/1.1 GET over a kept-alive connection.

Why not aiohttp: a GET through one shared aiohttp session costs ~75 us of CPU on this
machine; 10,000 checks/s would need most of a core for the client alone. A check needs
one fixed request and a status line, so each target keeps one raw asyncio connection,
writes prebuilt bytes and parses just enough of the answer (status, Content-Length or
chunked body) to judge it: ~4x cheaper. `judge()` holds the rules, and is pure.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from appliance.health.targets import Target

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
TICK = 0.01  # seconds: how late past its timeout a check may be declared timed out


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str = ""  # why it failed, one line; "" when ok
    latency: float = 0.0  # seconds from the start of the check to its verdict


class ProbeError(Exception):
    """A check that could not complete, with the reason for the status page."""


def judge(target: Target, status: int, body: bytes) -> str:
    """ "" when the answer means healthy, else why not."""
    if target.kind == "kube-proxy":
        # kube-proxy's healthCheckNodePort: 200 with localEndpoints > 0, 503 without.
        count = _local_endpoints(body)
        if status == 200:
            return "200 but localEndpoints is 0" if count == 0 else ""
        if status == 503:
            if count in (0, None):
                return "503: no local endpoints"
            # Since Kubernetes 1.28 also while kube-proxy itself is unhealthy.
            return f"503: kube-proxy unhealthy ({count} local endpoints)"
        return f"HTTP {status} (expected 200)"
    if target.kind == "kube-proxy-node":
        if status == 200:
            return ""
        if status == 503:
            return "503: kube-proxy unhealthy or node being deleted"
        return f"HTTP {status} (expected 200)"
    if status not in target.expect:
        want = ",".join(map(str, target.expect))
        return f"HTTP {status} (expected {want})"
    if target.body is not None and target.body.encode() not in body:
        return f"body does not contain {target.body[:40]!r}"
    return ""


# kube-proxy prints its JSON by hand (pretty, with tabs); the key cannot occur inside the
# namespace or name (DNS labels), so a search finds it without parsing the document.
_LOCAL_ENDPOINTS = re.compile(rb'"localEndpoints"\s*:\s*(\d{1,9})\s*[,}]')


def _local_endpoints(body: bytes) -> int | None:
    if b"localEndpoints" not in body:
        return None
    m = _LOCAL_ENDPOINTS.search(body)
    if m:
        return int(m.group(1))
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    n = doc.get("localEndpoints") if isinstance(doc, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def request_bytes(target: Target) -> bytes:
    host = f"[{target.address}]" if ":" in target.address else target.address
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host}:{target.port}\r\n"
        "User-Agent: appliance-health/1\r\nAccept: */*\r\n\r\n"
    ).encode("ascii", "replace")


def _header(fields: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (given as b"\\r\\nname:") in the lower-cased header
    block `fields` (starting at the CRLF after the status line)."""
    at = fields.find(name)
    if at < 0:
        return None
    start = at + len(name)
    end = fields.find(b"\r\n", start)
    return (fields[start:] if end < 0 else fields[start:end]).strip()


class _Response:
    """An incremental HTTP/1.1 response parser over one connection's bytes."""

    __slots__ = ("body", "buf", "chunked", "keep", "length", "status")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.length: int | None = None  # None: until EOF (or chunked)
        self.chunked = False
        self.keep = True
        self.body: bytes | None = None

    def feed(self, data: bytes) -> bool:
        """True once the whole response is here. Raises ProbeError on garbage."""
        self.buf += data
        if not self.status:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER:
                    raise ProbeError("response header too large")
                return False
            self._head(bytes(self.buf[:end]))
            del self.buf[: end + 4]
        if self.chunked:
            return self._chunks()
        if self.length is not None:
            if len(self.buf) >= self.length:
                self.body = bytes(self.buf[: self.length])
                return True
            return False
        if len(self.buf) > MAX_BODY:
            raise ProbeError("response body too large")
        return False

    def _head(self, head: bytes) -> None:
        eol = head.find(b"\r\n")
        first = head if eol < 0 else head[:eol]
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProbeError(f"not an HTTP response: {bytes(first[:40])!r}")
        self.status = int(parts[1])
        self.keep = parts[0] != b"HTTP/1.0"
        # Three lookups in the lower-cased head instead of a loop over every header line.
        fields = head[eol:].lower() if eol >= 0 else b""
        v = _header(fields, b"\r\ncontent-length:")
        if v is not None:
            if not v.isdigit() or int(v) > MAX_BODY:
                raise ProbeError(f"bad Content-Length {bytes(v[:20])!r}")
            self.length = int(v)
        v = _header(fields, b"\r\ntransfer-encoding:")
        if v is not None and b"chunked" in v:
            self.chunked = True
        v = _header(fields, b"\r\nconnection:")
        if v == b"close":
            self.keep = False
        elif v == b"keep-alive":
            self.keep = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        if self.length is None and not self.chunked:
            self.keep = False  # the body ends when the server closes

    def _chunks(self) -> bool:
        body = bytearray()
        pos = 0
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProbeError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                # Trailers are not expected from health endpoints; need the final CRLF.
                if buf.find(b"\r\n", eol + 2) < 0:
                    return False
                self.body = bytes(body)
                return True
            if eol + 2 + size + 2 > len(buf):
                return False
            body += buf[eol + 2 : eol + 2 + size]
            if len(body) > MAX_BODY:
                raise ProbeError("response body too large")
            pos = eol + 2 + size + 2

    def eof(self) -> bool:
        """The server closed: complete if the body was meant to run until then."""
        if self.status and self.length is None and not self.chunked:
            self.body = bytes(self.buf)
            return True
        return False


Answered = Callable[["_Response | None", "BaseException | None"], None]
Done = Callable[[Outcome], None]


class _HttpConnection(asyncio.Protocol):
    """One kept-alive connection to one target; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answered: Answered | None = None
        self.response = _Response()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def _finish(self, response: _Response | None, exc: BaseException | None) -> None:
        cb, self.answered = self.answered, None
        if cb is not None:
            cb(response, exc)

    def data_received(self, data: bytes) -> None:
        if self.answered is None:
            self.close()  # unasked-for bytes: the stream is out of step
            return
        try:
            if self.response.feed(data):
                self._finish(self.response, None)
        except ProbeError as e:
            self.close()
            self._finish(None, e)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answered is None:
            return
        if self.response.eof():
            self._finish(self.response, None)
        elif self.response.status or self.response.buf:
            self._finish(None, ProbeError("connection closed mid-response"))
        else:
            self._finish(None, ConnectionResetError("connection closed before a response"))

    def send(self, data: bytes, answered: Answered) -> None:
        assert self.transport is not None
        self.response = _Response()
        self.answered = answered
        self.transport.write(data)

    def request(self, data: bytes) -> asyncio.Future[_Response]:
        fut: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()

        def answered(resp: _Response | None, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                assert resp is not None
                fut.set_result(resp)

        self.send(data, answered)
        return fut

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return str(e) or "connection reset"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def _timed_out(target: Target) -> str:
    return f"timeout after {target.timeout:g}s"


class _Exchange:
    """One check over an already open connection, driven by callbacks alone: no task,
    no future, one timer. Most checks take this path; it is what makes 10,000/s cheap."""

    __slots__ = ("conn", "done", "pending", "prober", "start", "target")

    def __init__(
        self, prober: Prober, target: Target, conn: _HttpConnection, req: bytes, done: Done
    ) -> None:
        self.prober = prober
        self.target = target
        self.conn = conn
        self.done = done
        self.start = time.perf_counter()
        self.pending = True
        prober.arm(self, target.timeout)
        conn.send(req, self.answered)

    def answered(self, resp: _Response | None, exc: BaseException | None) -> None:
        if not self.pending:
            return  # already timed out and reported
        self.pending = False
        target = self.target
        if exc is None:
            assert resp is not None
            if not resp.keep:
                self.prober.forget(target.key)
            error = judge(target, resp.status, resp.body or b"")
            self.done(Outcome(not error, error, time.perf_counter() - self.start))
            return
        self.prober.forget(target.key)
        if isinstance(exc, ConnectionResetError):
            # The server closed the idle kept-alive connection: once more, on a fresh one,
            # within what is left of the timeout.
            left = target.timeout - (time.perf_counter() - self.start)
            self.prober.spawn(self.prober.check(target, left, self.start), self.done)
            return
        self.done(Outcome(False, _reason(exc), time.perf_counter() - self.start))

    def expire(self) -> None:
        if not self.pending:
            return
        self.pending = False
        self.prober.forget(self.target.key)  # a late answer would be read as the next one's
        self.done(Outcome(False, _timed_out(self.target), time.perf_counter() - self.start))


class Prober:
    """Runs checks; keeps one HTTP connection per target between checks."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, str], _HttpConnection] = {}
        self._requests: dict[Target, bytes] = {}
        self._tasks: set[asyncio.Task[Outcome]] = set()
        # Timeouts of the callback path, in buckets of TICK seconds: one timer per bucket
        # instead of one per check (a timer per check was a tenth of the CPU at 10,000/s).
        self._wheel: dict[int, list[_Exchange]] = {}

    def arm(self, exchange: _Exchange, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + timeout) / TICK)
        bucket = self._wheel.get(tick)
        if bucket is None:
            bucket = self._wheel[tick] = []
            loop.call_at(tick * TICK, self._expire, tick)
        bucket.append(exchange)

    def _expire(self, tick: int) -> None:
        for exchange in self._wheel.pop(tick, ()):
            exchange.expire()

    def start(self, target: Target, done: Done) -> None:
        """Start one check; `done` gets its outcome (always exactly once, unless the
        prober is closed first). Must be called from the running loop."""
        if target.kind != "tcp":
            conn = self._conns.get(target.key)
            if conn is not None and not conn.closed and conn.answered is None:
                _Exchange(self, target, conn, self._request(target), done)
                return
        self.spawn(self.check(target), done)

    def spawn(self, check: Coroutine[Any, Any, Outcome], done: Done) -> None:
        task = asyncio.get_running_loop().create_task(check)
        self._tasks.add(task)

        def finished(t: asyncio.Task[Outcome]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            done(Outcome(False, f"internal error: {exc}") if exc is not None else t.result())

        task.add_done_callback(finished)

    def _request(self, target: Target) -> bytes:
        req = self._requests.get(target)
        if req is None:
            req = self._requests[target] = request_bytes(target)
        return req

    async def check(
        self, target: Target, timeout: float | None = None, start: float | None = None
    ) -> Outcome:
        """One check, awaited (opens a connection when there is none)."""
        start = time.perf_counter() if start is None else start
        try:
            async with asyncio.timeout(target.timeout if timeout is None else max(timeout, 0)):
                if target.kind == "tcp":
                    await self._connect(target)
                    error = ""
                else:
                    error = await self._http(target)
        except TimeoutError:
            self.forget(target.key)
            return Outcome(False, _timed_out(target), time.perf_counter() - start)
        except (OSError, ProbeError) as e:
            self.forget(target.key)
            return Outcome(False, _reason(e), time.perf_counter() - start)
        return Outcome(not error, error, time.perf_counter() - start)

    async def _connect(self, target: Target) -> None:
        family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (target.address, target.port))
        finally:
            sock.close()

    async def _http(self, target: Target) -> str:
        req = self._request(target)
        conn = self._conns.get(target.key)
        for _attempt in range(2):
            fresh = conn is None or conn.closed
            if fresh:
                conn = await self._open(target)
            assert conn is not None
            try:
                resp = await conn.request(req)
            except ConnectionResetError:
                # A kept-alive connection the server closed while idle: once more, fresh.
                self.forget(target.key)
                conn = None
                if fresh:
                    raise
                continue
            if not resp.keep:
                self.forget(target.key)
            return judge(target, resp.status, resp.body or b"")
        raise ProbeError("unreachable")  # pragma: no cover

    async def _open(self, target: Target) -> _HttpConnection:
        self.forget(target.key)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_HttpConnection, target.address, target.port)
        self._conns[target.key] = conn
        return conn

    def forget(self, key: tuple[str, str]) -> None:
        """Close a target's connection (gone, changed, or out of step)."""
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def drop_request(self, target: Target) -> None:
        self._requests.pop(target, None)

    def close(self) -> None:
        """Close every connection and cancel checks in progress (their `done` is not
        called). `aclose()` also waits for the cancelled checks to finish."""
        for task in self._tasks:
            task.cancel()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._requests.clear()
        self._wheel.clear()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        self.close()
        await asyncio.gather(*tasks, return_exceptions=True)

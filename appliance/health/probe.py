"""The checks themselves: TCP connect, and HTTP/1.1 GET over a kept-alive connection.

Why not aiohttp, nor even asyncio's transports: a GET through one shared aiohttp session
costs ~75 us of CPU on this machine, and 10,000 checks/s must fit in half a core with
the scheduling. A check needs one fixed request and a status line, so each target has
one `_Probe`: a raw non-blocking socket kept open between checks, in one epoll of the
prober's own; prebuilt request bytes written with one `send()`; just enough parsing of
the answer (status, Content-Length or chunked body, Connection) to judge it. A check
allocates nothing but the bytes it reads and its `Outcome`: no task, no future, no
timer of its own (timeouts go in 10 ms buckets). `judge()` holds the rules, and is
pure.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import re
import select
import socket
import time
from collections.abc import Callable
from typing import NamedTuple

from appliance.address import host_port, socket_family_of
from appliance.health.targets import Target

log = logging.getLogger("appliance.health")

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
RECV = MAX_HEADER + MAX_BODY
TICK = 0.01  # seconds: how late past its timeout a check may be declared timed out


class Outcome(NamedTuple):
    """One check's result. A named tuple, not a dataclass: one is made per check, and
    a frozen dataclass costs four times as much to build."""

    ok: bool
    error: str = ""  # why it failed, one line; "" when ok
    latency: float = 0.0  # seconds from the start of the check to its verdict


Done = Callable[[Outcome], None]


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
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host_port(target.address, target.port)}\r\n"
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
        if not self.status and not self.buf:
            # The usual case: the whole answer in the first read. No copy into the buffer.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._head(data[:end])
                if self.length is not None and len(data) - end - 4 >= self.length:
                    self.body = data[end + 4 : end + 4 + self.length]
                    return True
                data = data[end + 4 :]
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
        if len(head) > MAX_HEADER:
            raise ProbeError("response header too large")
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


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return str(e) or "connection reset"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def _os_error(code: int) -> OSError:
    """The exception Python raises for errno `code` (ConnectionRefusedError for ...)."""
    return OSError(code, os.strerror(code))  # OSError(...) picks the subclass by errno


def _timed_out(target: Target) -> str:
    return f"timeout after {target.timeout:g}s"


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


class _Probe:
    """One target: its socket (open between HTTP checks) and the check in progress on it,
    at most one. Driven by the prober's epoll alone:

    connect: `connect_ex` (on loopback a refusal is known at once), else wait for the
             socket to be writable; HTTP then keeps it registered for reading.
    check:   `send()` the request; `_readable` feeds the parser until the answer is whole.
    end:     the answer, an error, the server's close, or the timeout bucket.
    """

    __slots__ = (
        "connecting",
        "deadline",
        "done",
        "fd",
        "fresh",
        "keep",
        "prober",
        "req",
        "resp",
        "sock",
        "start",
        "target",
        "unsent",
        "watching",
    )

    def __init__(self, prober: Prober, target: Target, keep: bool = True) -> None:
        self.prober = prober
        self.target = target
        self.keep = keep and target.kind != "tcp"  # the connection, between checks
        self.req = b"" if target.kind == "tcp" else request_bytes(target)
        self.sock: socket.socket | None = None
        self.fd = -1
        self.watching = 0  # the epoll events the socket is registered for
        self.connecting = False
        self.fresh = False  # the connection was opened for the check in progress
        self.done: Done | None = None  # set while a check is in progress
        self.resp: _Response | None = None
        self.unsent = b""
        self.start = 0.0
        self.deadline = 0

    # --- a check ---------------------------------------------------------------------------

    def check(self, done: Done) -> None:
        self.done = done
        self.start = time.perf_counter()
        self.deadline = self.prober.arm(self, self.target.timeout)
        if self.sock is None:
            self._connect()
        else:
            self.fresh = False
            self._send()

    def _finish(self, ok: bool, error: str) -> None:
        done = self.done
        if done is None:
            return
        self.done = None
        self.resp = None
        if not self.keep:
            self.close()
        done(Outcome(ok, error, time.perf_counter() - self.start))

    def _fail(self, error: str) -> None:
        self.close()  # a late answer would be read as the next check's
        self._finish(False, error)

    def expire(self, tick: int) -> None:
        if self.done is not None and self.deadline == tick:
            self._fail(_timed_out(self.target))

    def abandon(self) -> None:
        """The target is gone or changed: close, and end a check in progress."""
        self._fail("target removed")

    # --- the connection ----------------------------------------------------------------------

    def event(self, events: int) -> None:
        """What the prober's epoll reported for this socket."""
        if self.connecting:
            self._connected()
            return
        if events & select.EPOLLOUT and self.unsent:
            self._flush()
        if events & _READ and self.sock is not None:
            self._readable()

    def _connect(self) -> None:
        self.fresh = True
        t = self.target
        try:
            sock = socket.socket(socket_family_of(t.address))
        except OSError as e:  # out of descriptors
            self._finish(False, _reason(e))
            return
        self.sock = sock
        self.fd = sock.fileno()
        sock.setblocking(False)
        try:
            err = sock.connect_ex((t.address, t.port))
        except OSError as e:  # not an address
            self._fail(_reason(e))
            return
        if err == errno.EINPROGRESS:
            # On loopback the kernel has usually refused or accepted already.
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not err:
                self.connecting = True
                self.prober.watch(self, select.EPOLLOUT)
                return
        if err:
            self._fail(_reason(_os_error(err)))
            return
        self._established()

    def _connected(self) -> None:
        self.connecting = False
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(_reason(_os_error(err)))
            return
        self._established()

    def _established(self) -> None:
        if self.target.kind == "tcp":
            self._finish(True, "")
            return
        sock = self.sock
        assert sock is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.prober.watch(self, select.EPOLLIN)
        self._send()

    def _send(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            n = sock.send(self.req)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._lost(e)
            return
        if n < len(self.req):  # a full send buffer: never seen with a ~100-byte request
            self.unsent = self.req[n:]
            self.prober.watch(self, select.EPOLLIN | select.EPOLLOUT)

    def _flush(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            n = sock.send(self.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e)
            return
        self.unsent = self.unsent[n:]
        if not self.unsent:
            self.prober.watch(self, select.EPOLLIN)

    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e)
            return
        if self.done is None:
            self.close()  # idle: the server closed it, or sent what nobody asked for
            return
        if not data:
            self._lost(None)
            return
        resp = self.resp
        if resp is None:
            resp = self.resp = _Response()
        try:
            whole = resp.feed(data)
        except ProbeError as e:
            self._fail(str(e))
            return
        if whole:
            if not resp.keep:
                self.close()
            error = judge(self.target, resp.status, resp.body or b"")
            self._finish(not error, error)

    def _lost(self, exc: OSError | None) -> None:
        """The connection ended (EOF or an error) while a check was waiting on it."""
        if self.done is None:
            self.close()
            return
        resp = self.resp
        if exc is None and resp is not None and resp.eof():
            self.close()
            error = judge(self.target, resp.status, resp.body or b"")
            self._finish(not error, error)
        elif resp is not None and (resp.status or resp.buf):
            self._fail("connection closed mid-response")
        elif not self.fresh:
            # The server closed the kept-alive connection while it was idle: once more,
            # on a fresh one, within what is left of the same timeout.
            self.close()
            self._connect()
        elif exc is None or isinstance(exc, ConnectionResetError):
            self._fail("connection closed before a response")
        else:
            self._fail(_reason(exc))

    def close(self) -> None:
        sock = self.sock
        if sock is None:
            return
        if self.watching:
            self.prober.unwatch(self)
        self.sock = None
        self.fd = -1
        self.connecting = False
        self.unsent = b""
        sock.close()


_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP


class Prober:
    """Runs checks; keeps one HTTP connection per target between checks.

    Every socket is in one epoll of the prober's own, itself registered once with the
    loop: an answer costs a dict lookup and a call, not a trip through asyncio's
    selector, ready queue and callback handle."""

    def __init__(self) -> None:
        self._probes: dict[tuple[str, str], _Probe] = {}
        # Timeouts in buckets of TICK seconds: one timer per bucket, not one per check.
        self._wheel: dict[int, list[_Probe]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoll: select.epoll | None = None
        self._fds: dict[int, _Probe] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # --- the sockets -------------------------------------------------------------------------

    def watch(self, probe: _Probe, events: int) -> None:
        ep = self._epoll
        if ep is None:
            ep = self._epoll = select.epoll()
            self.loop.add_reader(ep.fileno(), self._events)
        if probe.watching:
            ep.modify(probe.fd, events)
        else:
            ep.register(probe.fd, events)
            self._fds[probe.fd] = probe
        probe.watching = events

    def unwatch(self, probe: _Probe) -> None:
        assert self._epoll is not None
        self._epoll.unregister(probe.fd)
        del self._fds[probe.fd]
        probe.watching = 0

    def _events(self) -> None:
        assert self._epoll is not None
        fds = self._fds
        for fd, events in self._epoll.poll(0, 1024):
            probe = fds.get(fd)
            if probe is None:
                continue
            try:
                probe.event(events)
            except Exception:  # a bug must cost one check, not every check after it
                log.exception("health: checking %s", probe.target.endpoint)
                probe._fail("internal error")

    # --- the checks --------------------------------------------------------------------------

    def arm(self, probe: _Probe, timeout: float) -> int:
        """Put `probe` in the bucket its check times out in; returns the bucket."""
        loop = self.loop
        tick = math.ceil((loop.time() + timeout) / TICK)
        bucket = self._wheel.get(tick)
        if bucket is None:
            bucket = self._wheel[tick] = []
            loop.call_at(tick * TICK, self._expire, tick)
        bucket.append(probe)
        return tick

    def _expire(self, tick: int) -> None:
        for probe in self._wheel.pop(tick, ()):
            probe.expire(tick)

    def probe(self, target: Target) -> _Probe:
        """The probe of `target`, kept between checks (the checker holds on to it)."""
        key = target.key
        probe = self._probes.get(key)
        if probe is not None:
            if probe.target is target:
                return probe
            if _same_probe(probe.target, target):
                probe.target = target  # new timing applies from the next check
                return probe
            probe.abandon()
        probe = self._probes[key] = _Probe(self, target)
        return probe

    def start(self, target: Target, done: Done) -> None:
        """Start one check; `done` gets its outcome (always exactly once, unless the
        prober is closed first; possibly before this returns, e.g. a refused connect).
        Must be called from the running loop."""
        probe = self.probe(target)
        if probe.done is not None:  # a check of this target already running: a second one
            probe = _Probe(self, target, keep=False)
        probe.check(done)

    async def check(self, target: Target) -> Outcome:
        """One check, awaited."""
        fut: asyncio.Future[Outcome] = self.loop.create_future()

        def done(outcome: Outcome) -> None:
            if not fut.done():
                fut.set_result(outcome)

        self.start(target, done)
        return await fut

    def forget(self, key: tuple[str, str]) -> None:
        """A target is gone or changed: close its connection; a check in progress ends
        as failed ("target removed")."""
        probe = self._probes.pop(key, None)
        if probe is not None:
            probe.abandon()

    def close(self) -> None:
        """Close every connection; checks in progress end without calling `done`. The
        prober stays usable: the next check connects again."""
        for probe in [*self._probes.values(), *self._fds.values()]:
            probe.done = None
            probe.close()
        self._wheel.clear()
        if self._epoll is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        self._loop = None  # a later check may run on another loop

    async def aclose(self) -> None:
        self.close()

"""The reactor of the checks: one socket per target, its state machine, and the epoll and
timer wheel that drive them all. The bytes are `http.py`'s, the verdict `verdict.py`'s.

Why not aiohttp, nor even asyncio's transports: a GET through one shared aiohttp session
costs ~75 us of CPU on this machine, and 10,000 checks/s must fit in half a core with
the scheduling. A check needs one fixed request and a status line, so each target has
one `Probe`: a raw non-blocking socket kept open between checks, in one epoll of the
prober's own; prebuilt request bytes written with one `send()`; the answer fed to
`http.Response` until it can be judged. A check allocates nothing but the bytes it reads
and its `Outcome`: no task, no future, no timer of its own (timeouts go in 10 ms buckets).
"""

from __future__ import annotations

import asyncio
import errno
import math
import select
import socket
import time
from collections.abc import Callable

from appliance.address import socket_family_of
from appliance.health.http import RECV, ProbeError, Response, request_bytes
from appliance.health.targets import Target, same_probe
from appliance.health.verdict import Outcome, judge, os_error, reason, timed_out
from appliance.logs import keyvalue_logger

log = keyvalue_logger("appliance.health")

TICK = 0.01  # seconds: how late past its timeout a check may be declared timed out
_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP

Done = Callable[[Outcome], None]


class Probe:
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
        self.resp: Response | None = None
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
            self._fail(timed_out(self.target))

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
            self._finish(False, reason(e))
            return
        self.sock = sock
        self.fd = sock.fileno()
        sock.setblocking(False)
        try:
            err = sock.connect_ex((t.address, t.port))
        except OSError as e:  # not an address
            self._fail(reason(e))
            return
        if err == errno.EINPROGRESS:
            # On loopback the kernel has usually refused or accepted already.
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not err:
                self.connecting = True
                self.prober.watch(self, select.EPOLLOUT)
                return
        if err:
            self._fail(reason(os_error(err)))
            return
        self._established()

    def _connected(self) -> None:
        self.connecting = False
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(reason(os_error(err)))
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
            resp = self.resp = Response()
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
            self._fail(reason(exc))

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


class Prober:
    """Runs checks; keeps one HTTP connection per target between checks.

    Every socket is in one epoll of the prober's own, itself registered once with the
    loop: an answer costs a dict lookup and a call, not a trip through asyncio's
    selector, ready queue and callback handle."""

    def __init__(self) -> None:
        self._probes: dict[tuple[str, str], Probe] = {}
        # Timeouts in buckets of TICK seconds: one timer per bucket, not one per check.
        self._wheel: dict[int, list[Probe]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoll: select.epoll | None = None
        self._fds: dict[int, Probe] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # --- the sockets -------------------------------------------------------------------------

    def watch(self, probe: Probe, events: int) -> None:
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

    def unwatch(self, probe: Probe) -> None:
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
                log.exception("health: internal error in a check", endpoint=probe.target.endpoint)
                probe._fail("internal error")

    # --- the checks --------------------------------------------------------------------------

    def arm(self, probe: Probe, timeout: float) -> int:
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

    def probe(self, target: Target) -> Probe:
        """The probe of `target`, kept between checks (the checker holds on to it)."""
        key = target.key
        probe = self._probes.get(key)
        if probe is not None:
            if probe.target is target:
                return probe
            if same_probe(probe.target, target):
                probe.target = target  # new timing applies from the next check
                return probe
            probe.abandon()
        probe = self._probes[key] = Probe(self, target)
        return probe

    def start(self, target: Target, done: Done) -> None:
        """Start one check; `done` gets its outcome (always exactly once, unless the
        prober is closed first; possibly before this returns, e.g. a refused connect).
        Must be called from the running loop."""
        probe = self.probe(target)
        if probe.done is not None:  # a check of this target already running: a second one
            probe = Probe(self, target, keep=False)
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

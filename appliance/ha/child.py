"""The VRRP process: the speaker alone on its own event loop, as keepalived's VRRP child
and seesaw's ha binary run apart from the engine. Nothing the daemon does (a plan of
50,000 Services, a zone rebuild, an nftables diff, its garbage collector) runs here, so
adverts leave on time and Master_Down timers fire on time.

    python -m appliance.ha.child     # started by the daemon (appliance.ha.process)

Stdin and stdout are the channel (appliance.ha.channel); logs go to stderr, which is the
daemon's, so the journal has them in one place. When the daemon goes away (its end of the
pipe closes, SIGTERM or SIGINT) the speaker resigns with priority 0 and removes its VIPs,
as keepalived's children do when their parent dies: a killed daemon leaves no master that
no longer programs the dataplane.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from typing import Any

from appliance.ha import channel
from appliance.ha.link import LinkError
from appliance.ha.speaker import Speaker
from appliance.logs import configure

log = logging.getLogger("appliance.ha.child")

STATUS_EVERY = 0.5  # seconds between unprompted status reports (counters for the page)
# The loop wakes every LAG_TICK; a wake-up more than LAG_WARN late is logged. A quarter of
# a second is most of a Master_Down_Interval at 100 ms adverts: the peer may be about to
# take over, and the operator should know why (a stopped or starved process, swapping).
LAG_TICK = 0.05
LAG_WARN = 0.25
PR_SET_PDEATHSIG = 1
# keepalived's vrrp_priority: the speaker goes first when the CPUs are busy (the daemon
# planning, DNS, other services). It does not make the child's own work cheaper: that is
# kept per message and per VIP small (see _read and report).
NICE = -10


class Child:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
        self.reader = reader
        self.writer = writer
        self.speaker: Speaker | None = None
        self.done = asyncio.Event()

    def send(self, message: dict[str, Any]) -> None:
        # A transport never blocks: a daemon busy for seconds must not stall the speaker.
        if not self.writer.is_closing():
            self.writer.write(channel.encode(message))

    def report(self, transition: str | None = None) -> None:
        speaker = self.speaker
        if speaker is None:
            return
        status = speaker.status(detail=False)
        exceptions: dict[str, tuple[bool, list[str]]] = {}
        for i in status.instances:
            group, held = speaker.group(i.name), speaker.held(i.name)
            # Set arithmetic in C, and the shorter of the two lists: a report comes with
            # every transition, before a takeover has held anything, and 50,000 VIPs
            # sorted and encoded there were 50 ms of a loop that sends adverts.
            missing, holding = group.members - held, held & group.members
            if len(missing) <= len(holding):
                exceptions[i.name] = (True, sorted(missing))
            else:
                exceptions[i.name] = (False, sorted(holding))
        self.send(channel.status_message(status, exceptions, transition))

    async def run(self) -> int:
        first = await self.reader.readline()
        if not first:
            return 0
        try:
            ha, pools, wait = channel.read_start(channel.decode(first))
            self.speaker = Speaker(ha, pools=pools, wait_for_plan=wait)
            self.speaker.on_change = lambda s: self.report(transition=s.name)
            await self.speaker.start()
        except (channel.ChannelError, OSError, LinkError, ValueError) as e:
            self.send({"op": "error", "message": str(e)})
            if self.speaker is not None:
                with contextlib.suppress(Exception):
                    await self.speaker.stop()
            return 1
        self.send({"op": "started"})
        reporter = asyncio.create_task(self._report_often())
        lag = asyncio.create_task(_watch_lag())
        try:
            await self._follow()
        finally:
            reporter.cancel()
            lag.cancel()
            await self.speaker.stop()
            self.report()
            self.send({"op": "stopped"})
            log.info("VRRP process %d: resigned, VIPs removed: exiting", os.getpid(),
                     extra={"pid": os.getpid()})  # fmt: skip
        return 0

    async def _follow(self) -> None:
        assert self.speaker is not None
        reading = asyncio.create_task(self._read())
        stopping = asyncio.create_task(self.done.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reading, stopping):
            task.cancel()

    async def _read(self) -> None:
        assert self.speaker is not None
        while True:
            line = await self.reader.readline()
            if not line:
                log.warning("the daemon's channel closed: resigning")
                return
            try:
                message = channel.decode(line)
                if message["op"] == "stop":
                    return
                if message["op"] == "track":
                    self.speaker.track(channel.read_track(message))
                    continue
                if message["op"] == "hold":
                    self.speaker.hold(channel.read_hold(message))
                    continue
                if message["op"] != "vips":
                    raise channel.ChannelError(f"unknown op {message['op']!r}")
                groups, planned = channel.read_vips(message)
                for name, (added, removed) in groups.items():
                    self.speaker.update(name, added, removed)
                if planned:
                    self.speaker.planned()
                # A first plan is 50 messages of 1,000 VIPs, and a read from a full buffer
                # does not yield: let the timers in between messages.
                await asyncio.sleep(0)
            except (channel.ChannelError, KeyError) as e:
                # The daemon and this process are one program: say it, keep speaking.
                log.error("channel: message refused: %s", e, extra={"error": str(e)})

    async def _report_often(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            self.report()


async def _watch_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + LAG_TICK
        await asyncio.sleep(LAG_TICK)
        late = loop.time() - asked
        if late > LAG_WARN:
            log.warning("VRRP process %d: its loop ran %d ms late (adverts and timers with it)",
                        os.getpid(), late * 1000,
                        extra={"pid": os.getpid(), "late_ms": round(late * 1000)})  # fmt: skip


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=channel.LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    writer, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, out)
    child = Child(reader, writer)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.done.set)
    rc = await child.run()
    # Let the last lines reach the daemon before the pipe goes.
    for _ in range(50):
        if writer.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.01)
    writer.close()
    # Resigned and the VIPs removed: nothing is left to do, and the loop's teardown (its
    # executor, pyroute2's threads) must not keep a process that no longer speaks alive.
    logging.shutdown()
    os._exit(rc)


def _die_with_parent() -> None:
    """SIGTERM when the daemon dies, even if the pipe is held open by someone else."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _first_for_the_cpu() -> None:
    """Before any thread starts: on Linux a nice value is per thread, inherited."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError as e:  # not root, or no CAP_SYS_NICE: slower under load, still correct
        log.warning("VRRP process %d: cannot take nice %d: %s", os.getpid(), NICE, e,
                    extra={"pid": os.getpid(), "nice": NICE, "error": str(e)})  # fmt: skip


def main() -> int:
    configure(os.environ.get("APPLIANCE_LOG_LEVEL", "info"), stream=sys.stderr)
    _die_with_parent()
    _first_for_the_cpu()
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())

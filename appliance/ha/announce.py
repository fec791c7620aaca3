"""Puts VIPs on the interface of the host that owns them and tells the LAN (GARP / NA).

The only code in `ha/` that changes the kernel's addresses. Adding an address that is
there, or removing one that is not, is not an error: the announcer is told the level
("hold these"), not the edge, and may be told twice.

Addresses change in `ip -batch` runs (the kernel at full speed: 50,000 VIPs must not cost
the speaker's loop 50,000 decoded netlink exchanges). A held VIP that someone else removes
(`ip addr del`, networkd) is put back at once: a raw netlink socket (addrwatch) reports
address events, our own deletions are told apart by count, and any other removal of a
held VIP re-adds it and announces it again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import itertools
import logging
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped,unused-ignore]

from appliance.ha import frames
from appliance.ha.addrwatch import AddressEvents
from appliance.ha.link import LinkInfo, lookup

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # a VIP that waited for DAD would arrive a second late
# Frames between two pauses of the one sender task. A send on a LAN of veths (or a busy
# NIC) does the neighbours' work inline: ~50-100 us a frame. 32 a millisecond keeps the
# speaker's timers within a few ms and a takeover of 10,000 VIPs announced in ~0.3 s a round.
CHUNK = 32
PAUSE = 0.001
# Address lines per `ip -batch`. The kernel adds an address in time linear in those the
# interface has (10,000 VIPs: 2.6 s, the next 10,000: 9.5 s): between two batches the
# announcer looks again at what it is asked for, so a takeover undone at once stops early.
BATCH = 2000
FAILED_LINE = re.compile(r"Command failed -:(\d+)")


class Announcer:
    """VIP addresses and their announcements on one interface."""

    def __init__(
        self,
        interface: str,
        *,
        garp_count: int = 5,
        garp_interval: float = 0.02,
        garp_refresh: float = 0.0,
    ) -> None:
        self.interface = interface
        self.garp_count = garp_count
        self.garp_interval = garp_interval
        self.garp_refresh = garp_refresh
        self.held: set[str] = set()  # what we are asked to hold (on the interface soon)
        self._unwanted: set[str] = set()  # released, and maybe still on the interface
        self.frames_sent = 0
        self.errors = 0
        self.restored = 0  # held VIPs put back after someone else removed them
        # On the interface as far as we know: the kernel's events, and our own changes the
        # moment we make them (their events come later, and may come after the next one).
        self.present: set[str] = set()
        self._own_dels: Counter[str] = Counter()  # our deletions whose event is still due
        self._to_restore: set[str] = set()
        self._restorer: asyncio.Task[None] | None = None
        self._ipr: AsyncIPRoute | None = None
        self._packet: socket.socket | None = None
        self._link: LinkInfo | None = None
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._events: AddressEvents | None = None
        self._bursts: set[asyncio.Task[None]] = set()
        self._rounds: collections.deque[tuple[list[str], int]] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._frames: dict[str, bytes] = {}  # VIP -> its GARP / NA frame

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        self._link = await lookup(self._ipr, self.interface)
        self._packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._packet.bind((self.interface, 0))
        self._packet.setblocking(False)
        # Events first, then the dump: an address changed in between is in one of them.
        self._events = AddressEvents(self._link.index, self._event, self._lost)
        self._events.start()
        self.present = await self._dump()
        if self.garp_refresh > 0:
            self._refresher = asyncio.create_task(self._refresh())

    async def close(self) -> None:
        self._closed = True
        self._rounds.clear()
        if self._events is not None:
            self._events.close()
        tasks = [
            t
            for t in (self._refresher, self._restorer, self._sender, *self._bursts)
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._packet is not None:
            self._packet.close()
        if self._ipr is not None:
            self._ipr.close()

    async def hold(self, vips: Iterable[str]) -> None:
        """Add the VIPs to the interface, then announce them (a burst, in the background)."""
        wanted = list(dict.fromkeys(vips))  # in the caller's (address) order, once each
        self.held.update(wanted)
        self._unwanted.difference_update(wanted)
        await self._converge()
        self._queue_burst(wanted)

    def burst(self, vips: Iterable[str]) -> None:
        """Announce those of the VIPs we hold, `garp_count` times (in the background).
        One sender task paces every burst: many bursts at once must not add up to a
        loop that runs nothing but sends. In the order given (the speaker's is the
        address order): sorting 50,000 strings is 35 ms the adverts would wait."""
        self._queue_burst(list(dict.fromkeys(vips)))

    def _queue_burst(self, wanted: list[str]) -> None:
        """`wanted`: once each, in order (hold has made it so already)."""
        if wanted and self.garp_count > 0:
            self._rounds.append((wanted, self.garp_count))
            if self._sender is None or self._sender.done():
                self._sender = asyncio.create_task(self._send_rounds())

    @property
    def sending(self) -> bool:
        """A burst is under way (its first round not yet sent)."""
        return bool(self._rounds)

    async def _send_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._rounds:
            vips, left = self._rounds[0]
            await self._announce_all([v for v in vips if v in self.held])
            self._rounds.popleft()
            if left > 1:
                # The next round after garp_interval, queued behind what is waiting now.
                loop.call_later(self.garp_interval, self._again, vips, left - 1)

    def _again(self, vips: list[str], left: int) -> None:
        if self._closed:
            return
        self._rounds.append((vips, left))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_rounds())

    async def release(self, vips: Iterable[str]) -> None:
        """Remove the VIPs; only those on the interface cost a netlink message."""
        gone = set(vips)
        self.held.difference_update(gone)
        self._unwanted.update(gone)
        await self._converge()

    async def _converge(self) -> None:
        """Bring the interface to the latest hold/release, one batch at a time, removals
        first. Holds and releases that follow each other faster than the kernel can add
        50,000 addresses are not queued one after the other: each batch is what is asked
        for now (a backup must not end up holding what an earlier takeover started)."""
        refused: set[str] = set()  # the kernel said no (logged): not again in this run
        async with self._lock:
            while True:
                self._unwanted.intersection_update(self.present)
                doomed = list(itertools.islice(self._unwanted, BATCH))
                if doomed:
                    self._unwanted.difference_update(doomed)
                    self.present.difference_update(doomed)
                    self._own_dels.update(doomed)
                    for vip in await self._batch("del", doomed):
                        self._forget_own_del(vip)  # it was not there: no event will come
                    continue
                todo = (v for v in self.held if v not in self.present and v not in refused)
                missing = list(itertools.islice(todo, BATCH))
                if not missing:
                    return
                self.present.update(missing)
                failed = await self._batch("add", missing)
                self.present.difference_update(failed)
                refused.update(failed)

    async def _batch(self, command: str, vips: list[str]) -> list[str]:
        """`ip -batch` (one process, the kernel at full speed, no per-address decoding
        here); the VIPs whose line failed. Adding one that is there, or removing one that
        is not, is not an error, but is returned for `del` (no event will come)."""
        failed: list[str] = []
        for start in range(0, len(vips), BATCH):
            chunk = vips[start : start + BATCH]
            lines = []
            for vip in chunk:
                six = ":" in vip
                lines.append(
                    f"address {command} {vip}/{128 if six else 32} dev {self.interface}"
                    + (" nodad" if six and command == "add" else "")
                )
            try:
                proc = await asyncio.create_subprocess_exec(
                    "ip", "-force", "-batch", "-",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
            except OSError as e:
                self.errors += len(chunk)
                log.warning("%s: ip: %s", self.interface, e,
                            extra={"interface": self.interface, "error": str(e)})  # fmt: skip
                failed += chunk
                continue
            _, err = await proc.communicate(("\n".join(lines) + "\n").encode())
            why = ""
            for line in err.decode(errors="replace").splitlines():
                m = FAILED_LINE.match(line)
                if m is None:
                    why = line.strip()
                    continue
                vip = chunk[int(m.group(1)) - 1]
                if command == "add" and "File exists" in why:
                    continue
                failed.append(vip)
                if not (command == "del" and "Cannot assign requested address" in why):
                    self.errors += 1
                    log.warning("%s: %s %s: %s", self.interface, command, vip, why,
                                extra={"interface": self.interface, "command": command,
                                       "vip": vip, "error": why})  # fmt: skip
        return failed

    def _forget_own_del(self, vip: str) -> None:
        self._own_dels[vip] -= 1
        if self._own_dels[vip] <= 0:
            del self._own_dels[vip]

    def _event(self, kind: str, address: str) -> None:
        vip = address  # inet_ntop's spelling is the canonical one
        if kind == "add":
            self.present.add(vip)
            return
        if vip in self._own_dels:
            self._forget_own_del(vip)  # ours: present was updated when we asked
            return
        self.present.discard(vip)
        if vip in self.held:
            # Someone else removed a held VIP (`ip addr del`, networkd): put it back.
            self._to_restore.add(vip)
            if self._restorer is None or self._restorer.done():
                self._restorer = asyncio.create_task(self._restore())

    def _lost(self) -> None:
        """The kernel dropped events: read the interface again, put back what is missing."""
        log.warning("%s: address events lost: reading the interface again", self.interface,
                    extra={"interface": self.interface})  # fmt: skip

        async def resync() -> None:
            async with self._lock:
                self.present = await self._dump()
                self._own_dels.clear()
            self._to_restore.update(self.held - self.present)
            await self._restore()

        task = asyncio.create_task(resync())
        self._bursts.add(task)
        task.add_done_callback(self._bursts.discard)

    async def _restore(self) -> None:
        while self._to_restore:
            back = sorted(v for v in self._to_restore if v in self.held and v not in self.present)
            self._to_restore.clear()
            await self._converge()  # adds every held VIP that is missing, these among them
            if back:
                self.restored += len(back)
                shown = ", ".join(back[:5]) + (
                    f" and {len(back) - 5} more" if len(back) > 5 else ""
                )
                log.warning("%s: VIP %s was removed from the interface: added back",
                            self.interface, shown,
                            extra={"interface": self.interface, "vips": len(back)})  # fmt: skip
                self.burst(back)

    async def _dump(self) -> set[str]:
        assert self._ipr is not None and self._link is not None
        found: set[str] = set()
        async for msg in await self._ipr.addr("dump", index=self._link.index):
            address = msg.get("IFA_ADDRESS") or msg.get("address")
            if address:
                found.add(str(ipaddress.ip_address(address)))
        return found

    async def _announce_all(self, vips: list[str]) -> None:
        for start in range(0, len(vips), CHUNK):
            if start:
                await asyncio.sleep(PAUSE)
            self.announce(vips[start : start + CHUNK])

    def announce(self, vips: Iterable[str]) -> None:
        """Send one GARP / unsolicited NA per VIP, now."""
        assert self._packet is not None and self._link is not None, "start() first"
        cache = self._frames
        for vip in vips:
            frame = cache.get(vip)
            if frame is None:  # built once per VIP: a burst of 50,000 is sends, not packing
                frame = frames.announcement(self._link.mac, vip, self._link.ipv6_link_local)
                if len(cache) > 2 * len(self.held) + 1024:
                    cache.clear()
                cache[vip] = frame
            try:
                self._packet.send(frame)
                self.frames_sent += 1
            except OSError as e:  # link down: the next burst or refresh will do
                self.errors += 1
                why = {"interface": self.interface, "vip": vip, "error": str(e)}
                log.debug("%s: announce %s: %s", self.interface, vip, e, extra=why)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.garp_refresh)
            await self._announce_all(sorted(self.held))


async def release_strays(interface: str, ours: Callable[[str], bool]) -> list[str]:
    """Remove every address on `interface` for which `ours` says it is a VIP (one of our
    pools), and return them. At start nothing is held yet, so a VIP there is a killed run's
    leftover; after the daemon dies (systemd's ExecStopPost) it answers ARP for nobody."""
    removed: list[str] = []
    ipr = AsyncIPRoute()
    try:
        link = await lookup(ipr, interface)
        async for msg in await ipr.addr("dump", index=link.index):
            address = msg.get("IFA_ADDRESS") or msg.get("address")
            if not address or not ours(address):
                continue
            try:
                await ipr.addr("del", index=link.index, address=address, prefixlen=msg["prefixlen"])
                removed.append(address)
            except NetlinkError as e:
                if e.code != errno.EADDRNOTAVAIL:
                    why = {"interface": interface, "vip": address, "error": str(e)}
                    log.warning("%s: del %s: %s", interface, address, e, extra=why)
    finally:
        ipr.close()
    return removed

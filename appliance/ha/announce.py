"""Puts VIPs on the interface of the host that owns them and tells the LAN (GARP / NA).

The only code in `ha/` that changes the kernel's addresses. Adding an address that is
there, or removing one that is not, is not an error: the announcer is told the level
("hold these"), not the edge, and may be told twice.

A held VIP that someone else removes (`ip addr del`, networkd) is put back at once: a
second netlink socket listens for address events, and a removal of a held VIP on our
interface re-adds it and announces it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.rtnl import (  # type: ignore[import-untyped,unused-ignore]
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
)

from appliance.ha import frames
from appliance.ha.link import LinkInfo, lookup

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # a VIP that waited for DAD would arrive a second late
# Frames sent between two yields to the loop: a burst for 50,000 VIPs must not hold up
# an advert (about 5 us a frame: ~1 ms a chunk).
CHUNK = 256


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
        self.held: set[str] = set()
        self.frames_sent = 0
        self.errors = 0
        self.restored = 0  # held VIPs put back after someone else removed them
        self._ipr: AsyncIPRoute | None = None
        self._packet: socket.socket | None = None
        self._link: LinkInfo | None = None
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._bursts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        self._link = await lookup(self._ipr, self.interface)
        self._packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._packet.bind((self.interface, 0))
        self._packet.setblocking(False)
        events = AsyncIPRoute()
        await events.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        self._watcher = asyncio.create_task(self._watch(events))
        if self.garp_refresh > 0:
            self._refresher = asyncio.create_task(self._refresh())

    async def close(self) -> None:
        tasks = [t for t in (self._refresher, self._watcher, *self._bursts) if t is not None]
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
        wanted = sorted(set(vips))
        async with self._lock:
            for vip in wanted:
                await self._address("add", vip)
                self.held.add(vip)
        self.burst(wanted)

    def burst(self, vips: Iterable[str]) -> None:
        """Announce those of the VIPs we hold, `garp_count` times (in the background)."""
        wanted = sorted(set(vips))
        if wanted:
            task = asyncio.create_task(self._burst(wanted))
            self._bursts.add(task)
            task.add_done_callback(self._bursts.discard)

    async def release(self, vips: Iterable[str]) -> None:
        async with self._lock:
            for vip in sorted(set(vips)):
                await self._address("del", vip)
                self.held.discard(vip)

    async def _address(self, command: str, vip: str) -> None:
        assert self._ipr is not None and self._link is not None, "start() first"
        address = ipaddress.ip_address(vip)
        extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
        try:
            await self._ipr.addr(
                command,
                index=self._link.index,
                address=str(address),
                prefixlen=address.max_prefixlen,
                **extra,
            )
        except NetlinkError as e:
            if (command, e.code) in (("add", errno.EEXIST), ("del", errno.EADDRNOTAVAIL)):
                return
            self.errors += 1
            log.warning("%s: %s %s: %s", self.interface, command, vip, e)

    async def _burst(self, vips: list[str]) -> None:
        for i in range(self.garp_count):
            if i:
                await asyncio.sleep(self.garp_interval)
            await self._announce_all([v for v in vips if v in self.held])

    async def _announce_all(self, vips: list[str]) -> None:
        for start in range(0, len(vips), CHUNK):
            if start:
                await asyncio.sleep(0)
            self.announce(vips[start : start + CHUNK])

    def announce(self, vips: Iterable[str]) -> None:
        """Send one GARP / unsolicited NA per VIP, now."""
        assert self._packet is not None and self._link is not None, "start() first"
        for vip in vips:
            frame = frames.announcement(self._link.mac, vip, self._link.ipv6_link_local)
            try:
                self._packet.send(frame)
                self.frames_sent += 1
            except OSError as e:  # link down: the next burst or refresh will do
                self.errors += 1
                log.debug("%s: announce %s: %s", self.interface, vip, e)

    async def _watch(self, events: AsyncIPRoute) -> None:
        """Put back every held VIP removed from our interface by someone else. Our own
        `release` forgets a VIP under the lock, before this looks at it."""
        assert self._link is not None
        try:
            while True:
                async for msg in events.get():
                    if msg.get("event") != "RTM_DELADDR" or msg.get("index") != self._link.index:
                        continue
                    address = msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL")
                    if address:
                        await self._restore(str(ipaddress.ip_address(address)))
        finally:
            events.close()

    async def _restore(self, vip: str) -> None:
        async with self._lock:
            if vip not in self.held:
                return
            await self._address("add", vip)
        self.restored += 1
        log.warning("%s: VIP %s was removed from the interface: added back", self.interface, vip)
        self.burst([vip])

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
                    log.warning("%s: del %s: %s", interface, address, e)
    finally:
        ipr.close()
    return removed

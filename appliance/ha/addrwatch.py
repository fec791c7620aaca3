"""Address events of one interface, read straight off a netlink socket.

Holding 50,000 VIPs means 50,000 RTM_NEWADDR events when they go on and as many
RTM_DELADDR when they go off. A general netlink library decodes every attribute of every
message; here a message costs two struct unpacks and, for our interface only, one
attribute walk, so the speaker's loop is never held up by its own address changes.
Pure parsing (`parse`) and a thin socket adapter.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable, Iterator

RTM_NEWADDR, RTM_DELADDR = 20, 21
RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLMSG_HDR = struct.Struct("=LHHLL")
IFADDRMSG = struct.Struct("=BBBBI")
RTATTR = struct.Struct("=HH")
RCVBUF = 16 << 20  # bytes: 50,000 events at once fit
READS_PER_WAKE = 4  # x 64 kB: ~1,000 events a wake, a few ms; the timers run in between


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse(data: bytes, index: int) -> Iterator[tuple[str, str]]:
    """("add" | "del", address) for each address event of interface `index` in `data`."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        end = offset + length
        if kind in (RTM_NEWADDR, RTM_DELADDR) and end - offset >= 16 + IFADDRMSG.size:
            family, _, _, _, ifindex = IFADDRMSG.unpack_from(data, offset + 16)
            if ifindex == index and family in (socket.AF_INET, socket.AF_INET6):
                address = _address(data, offset + 16 + IFADDRMSG.size, end, family)
                if address is not None:
                    yield ("add" if kind == RTM_NEWADDR else "del"), address
        offset += _align(length)


def _address(data: bytes, offset: int, end: int, family: int) -> str | None:
    found: dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        if kind in (IFA_ADDRESS, IFA_LOCAL):
            found[kind] = data[offset + RTATTR.size : offset + length]
        offset += _align(length)
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)  # IPv4 peers: LOCAL is ours
    if raw is None or len(raw) != (4 if family == socket.AF_INET else 16):
        return None
    return socket.inet_ntop(family, raw)


class AddressEvents:
    """Calls `on_event(kind, address)` for our interface; `on_lost()` when the kernel
    dropped events (the socket overflowed): the caller must read the addresses again."""

    def __init__(
        self,
        index: int,
        on_event: Callable[[str, str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.index = index
        self.on_event = on_event
        self.on_lost = on_lost
        self.lost = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        s.setblocking(False)
        try:  # CAP_NET_ADMIN lifts the rmem_max cap
            s.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self._sock = s
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(s.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(READS_PER_WAKE):
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.lost += 1
                    self.on_lost()
                    continue
                raise
            for kind, address in parse(data, self.index):
                self.on_event(kind, address)

"""What the HA code needs to know about its interface, read over netlink (pyroute2)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]

SYSFS = Path("/sys/class/net")
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFF_UP = 0x1
IFA_F_SECONDARY = 0x01
IFA_F_TENTATIVE = 0x40  # DAD still running: the kernel will not send from it yet


class LinkError(RuntimeError):
    """The interface is missing or unusable; the message names it."""


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    index: int
    mac: str
    up: bool  # administratively up and with carrier
    ipv4: str | None  # the primary address: VRRP's source and tie-break
    ipv6_link_local: str | None  # VRRP for IPv6 goes out from here (RFC 5798 5.1.2.1)


def _is_up(link: Any) -> bool:
    state = link.get("IFLA_OPERSTATE") or link.get("operstate") or ""
    return bool(link["flags"] & IFF_UP) and state in ("UP", "UNKNOWN")


async def lookup(
    ipr: AsyncIPRoute, name: str, *, skip: Callable[[str], bool] = lambda _: False
) -> LinkInfo:
    """Read `name`'s index, MAC, state and addresses; an address for which `skip` says
    True (a VIP left by an earlier run) is never taken as the primary one."""
    found = await ipr.link_lookup(ifname=name)
    if not found:
        raise LinkError(f"interface {name}: not found")
    index = int(found[0])
    link = (await ipr.link("get", index=index))[0]
    ipv4: str | None = None
    ipv6_ll: str | None = None
    async for msg in await ipr.addr("dump", index=index):
        address = msg.get("IFA_ADDRESS") or msg.get("address")
        if not address or skip(address):
            continue
        if (
            msg["family"] == socket.AF_INET
            and ipv4 is None
            and not msg.get("IFA_FLAGS", msg["flags"]) & IFA_F_SECONDARY
        ):
            ipv4 = address
        elif (
            msg["family"] == socket.AF_INET6
            and msg["scope"] == RT_SCOPE_LINK
            and ipv6_ll is None
            and not msg.get("IFA_FLAGS", msg["flags"]) & IFA_F_TENTATIVE
        ):
            ipv6_ll = address
    return LinkInfo(
        name=name,
        index=index,
        mac=str(link.get("IFLA_ADDRESS") or link.get("address") or ""),
        up=_is_up(link),
        ipv4=ipv4,
        ipv6_link_local=ipv6_ll,
    )


def down_reason(name: str) -> str | None:
    """None when the interface `name` is up (with carrier); else why not. From sysfs:
    two small reads, where a netlink request decodes every attribute of the link (polled
    every 50 ms, that was the speaker's largest steady cost)."""
    base = SYSFS / name
    try:
        flags = int((base / "flags").read_text(), 16)
        state = (base / "operstate").read_text().strip()
    except (OSError, ValueError):
        return "not found"
    if not flags & IFF_UP:
        return "down"
    return None if state in ("up", "unknown") else "down"

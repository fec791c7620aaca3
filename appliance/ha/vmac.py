"""The virtual router MAC (RFC 5798 7.3, keepalived's `use_vmac`): a macvlan on the HA
interface with the MAC 00-00-5E-00-01-{VRID}, holding the instance's VIPs.

Whoever is master answers ARP for the VIPs with the same MAC, so a takeover does not
depend on clients' ARP caches at all: their entries stay right, and the new master's
gratuitous ARP (sent from the virtual MAC) only moves the switch's MAC table.

The macvlan is up only while this host is master (down, it receives nothing, so a
backup never takes or forwards a frame meant for the master), has no IPv6 (no link-local,
no MLD or ND: a backup must never send from the virtual MAC), and the HA interface gets
arp_ignore=1 and arp_announce=2 so that it neither answers for the VIPs with its own MAC
nor asks from a VIP (a client would learn the VIP at the interface's MAC). Pure part: names
and MACs; the rest is netlink and /proc/sys.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped,unused-ignore]

log = logging.getLogger(__name__)

IFF_UP = 0x1
SYSCTL = Path("/proc/sys/net")


def name(vrid: int) -> str:
    """keepalived's default name for the VMAC interface."""
    return f"vrrp.{vrid}"


def mac(vrid: int) -> str:
    """The IPv4 virtual router MAC of RFC 5798 7.3."""
    return f"00:00:5e:00:01:{vrid:02x}"


def _sysctl(path: str, value: str) -> None:
    (SYSCTL / path).write_text(value)


class Vmac:
    """One instance's macvlan: made at start, up while master, removed at stop."""

    def __init__(self, base: str, vrid: int) -> None:
        self.base = base
        self.vrid = vrid
        self.name = name(vrid)
        self.mac = mac(vrid)
        self.index: int | None = None
        self._ipr: AsyncIPRoute | None = None

    async def create(self) -> None:
        """(Re)create it down, with no IPv6; a leftover of a killed run is replaced."""
        self._ipr = AsyncIPRoute()
        base = await self._ipr.link_lookup(ifname=self.base)
        if not base:
            raise OSError(f"use_vmac: interface {self.base}: not found")
        await self._delete()
        try:
            await self._ipr.link(
                "add",
                ifname=self.name,
                kind="macvlan",
                link=base[0],
                address=self.mac,
                macvlan_mode="private",
            )
        except NetlinkError as e:
            raise OSError(f"use_vmac: cannot create {self.name} on {self.base}: {e}") from None
        self.index = int((await self._ipr.link_lookup(ifname=self.name))[0])
        try:
            _sysctl(f"ipv6/conf/{self.name}/disable_ipv6", "1")
            _sysctl(f"ipv4/conf/{self.name}/rp_filter", "0")  # replies leave by the base
            _sysctl(f"ipv4/conf/{self.name}/arp_ignore", "1")
            # The base's own MAC must not answer for addresses of the macvlan, nor ask
            # from one (a client learns the sender of an ARP request: the VIP, base MAC).
            _sysctl(f"ipv4/conf/{self.base}/arp_ignore", "1")
            _sysctl(f"ipv4/conf/{self.base}/arp_announce", "2")
        except OSError as e:
            log.warning("use_vmac: %s: sysctl: %s", self.name, e,
                        extra={"link": self.name, "error": str(e)})  # fmt: skip

    async def set_up(self, up: bool) -> None:
        assert self._ipr is not None and self.index is not None, "create() first"
        await self._ipr.link("set", index=self.index, state="up" if up else "down")

    async def remove(self) -> None:
        if self._ipr is None:
            return
        with contextlib.suppress(OSError):
            await self._delete()
        self._ipr.close()
        self._ipr = None
        self.index = None

    async def remove_leftover(self) -> bool:
        """Remove the macvlan a killed run left (ExecStopPost); True if there was one."""
        self._ipr = AsyncIPRoute()
        try:
            return await self._delete()
        finally:
            self._ipr.close()
            self._ipr = None

    async def _delete(self) -> bool:
        assert self._ipr is not None
        found = await self._ipr.link_lookup(ifname=self.name)
        if not found:
            return False
        try:
            await self._ipr.link("del", index=found[0])
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise OSError(f"use_vmac: cannot remove {self.name}: {e}") from None
        return True

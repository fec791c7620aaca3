"""The kernel side of a lab node, and the only part of it that changes the kernel: pod
addresses on `lo` and routes to other nodes' pods (pyroute2, netlink), the kube-proxy
table (libnftables in this process, the library `nft` and python3-nftables wrap; the `nft`
command when the library cannot be loaded), and the forwarding sysctls.

In process because a manifest edit must reach the kernel within 100 ms on a busy machine:
`nft -f` as a process costs 20-40 ms a transaction there, libnftables 2-4 ms once warm;
`ip` costs a fork per address.
"""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped,unused-ignore]

from appliance.dataplane import libnft

IFA_F_NODAD = 0x02  # a pod address waiting for DAD would not answer for a second
FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def host(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"


class Nft:
    """nftables transactions: `run(text)` is `nft -f -` with that text."""

    def __init__(self) -> None:
        self._nft = libnft.Nft()

    @property
    def in_process(self) -> bool:
        return self._nft.in_process

    async def run(self, text: str) -> str:
        """ "" when the transaction was applied, else nft's complaint on one line."""
        err = await self._nft.run(text)
        return _one_line(err.decode(errors="replace")) if err else ""

    def close(self) -> None:
        self._nft.close()


def _one_line(text: str) -> str:
    return " | ".join(line.rstrip() for line in text.strip().splitlines())


class Links:
    """Host addresses on `lo` and host routes, each call one netlink request."""

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None
        self._lo = 1

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        found = await self._ipr.link_lookup(ifname="lo")
        self._lo = int(found[0]) if found else 1
        await self._ipr.link("set", index=self._lo, state="up")

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
        self._ipr = None

    async def address(self, command: str, address: str) -> str:
        """Add ("add") or remove ("del") a host address on lo; "" or the error."""
        assert self._ipr is not None, "start() first"
        ip = ipaddress.ip_address(address)
        extra = {"flags": IFA_F_NODAD} if ip.version == 6 else {}
        try:
            await self._ipr.addr(
                command, index=self._lo, address=address, prefixlen=ip.max_prefixlen, **extra
            )
        except NetlinkError as e:
            if (command, e.code) in (("add", errno.EEXIST), ("del", errno.EADDRNOTAVAIL)):
                return ""
            return f"address {command} {host(address)} dev lo: {e}"
        return ""

    async def route(self, command: str, address: str, via: str | None = None) -> str:
        """Replace ("replace") or remove ("del") the route `address/32 via via`."""
        assert self._ipr is not None, "start() first"
        extra = {"gateway": via} if via is not None else {}
        try:
            await self._ipr.route(command, dst=host(address), **extra)
        except NetlinkError as e:
            if command == "del" and e.code == errno.ESRCH:
                return ""
            return f"route {command} {host(address)}: {e}"
        return ""


def forwarding() -> list[str]:
    """Turn forwarding on where it is off; what was done or failed, one line each."""
    said: list[str] = []
    for name in FORWARDING:
        path = Path(name)
        try:
            if path.read_text().strip() == "0":
                path.write_text("1\n")
                said.append(f"{name} set to 1")
        except OSError as e:
            said.append(f"{name}: {e.strerror or e}")
    return said

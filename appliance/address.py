"""IP addresses as every part of the appliance reads and writes them (pure, no I/O).

One rule for zone indexes: an address we configure, allocate, announce or compare never
has one (`fe80::1%eth0` is not an address here, as the API server says too). Only what a
socket hands us may carry one, and `strip_zone` drops it there.

Also the three names of a family (`"IPv4"`, `4`, `AF_INET`), `host:port` with IPv6 in
brackets, and which pool an address belongs to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

Family = Literal["IPv4", "IPv6"]  # the word Kubernetes uses (ipFamilies)
IPVersion = Literal[4, 6]  # the number ipaddress, VRRP and the socket layer use
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPRange = (
    tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
    | tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]
)

_FAMILY_OF_VERSION: dict[int, Family] = {4: "IPv4", 6: "IPv6"}


# --- parsing ------------------------------------------------------------------------------


def parse_ip(text: str) -> IPAddress | None:
    """The address `text` spells exactly (no spaces), or None; a zone index is refused."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def strip_zone(text: str) -> str:
    """A socket's source address without its zone (`fe80::1%eth0` -> `fe80::1`)."""
    return text.split("%", maxsplit=1)[0]


# --- families -----------------------------------------------------------------------------


def family_of(address: str) -> Family:
    """The family of an address in canonical text (no parsing: IPv6 has a colon)."""
    return "IPv6" if ":" in address else "IPv4"


def version_of(family: Family) -> IPVersion:
    """`"IPv4"` -> 4, `"IPv6"` -> 6 (ipaddress's `.version`)."""
    return 4 if family == "IPv4" else 6


def family_of_version(version: int) -> Family:
    return _FAMILY_OF_VERSION[version]


def socket_family(version: int) -> socket.AddressFamily:
    """4 -> AF_INET, 6 -> AF_INET6."""
    return socket.AF_INET if version == 4 else socket.AF_INET6


def socket_family_of(address: str) -> socket.AddressFamily:
    """The socket family of an address in canonical text (or of a host that is one)."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def packed(address: str) -> tuple[socket.AddressFamily, bytes]:
    """(AF_INET or AF_INET6, network-order bytes); cheaper than ipaddress, for hot paths."""
    af = socket_family_of(address)
    return af, socket.inet_pton(af, address)


# --- host:port ----------------------------------------------------------------------------


def bracket(host: str) -> str:
    """An IPv6 address in brackets, as URLs and `host:port` want it; others as they are."""
    return f"[{host}]" if ":" in host else host


def host_port(host: str, port: int | str) -> str:
    """`198.18.0.1:80`, `[fd00:198:18::1]:80`."""
    return f"{bracket(host)}:{port}"


# --- pools --------------------------------------------------------------------------------


class HasRanges(Protocol):
    """What `PoolRanges` needs of a pool: inclusive (first, last) address pairs."""

    @property
    def ranges(self) -> tuple[IPRange, ...]: ...


P = TypeVar("P", bound=HasRanges)


@dataclass(frozen=True)
class PoolRanges(Generic[P]):
    """Pools' ranges as integers, built once: which pool holds an address."""

    ranges: tuple[tuple[P, int, int, int], ...]  # pool, version, first, last

    @classmethod
    def of(cls, pools: Iterable[P]) -> PoolRanges[P]:
        return cls(
            tuple(
                (pool, first.version, int(first), int(last))
                for pool in pools
                for first, last in pool.ranges
            )
        )

    def pool_of(self, ip: IPAddress) -> P | None:
        """The first pool (in config order) with a range holding `ip`."""
        n = int(ip)
        for pool, version, first, last in self.ranges:
            if version == ip.version and first <= n <= last:
                return pool
        return None

    def holds(self, address: str) -> bool:
        """Whether some pool holds `address` (text; not an address: False)."""
        ip = parse_ip(address)
        return ip is not None and self.pool_of(ip) is not None


def in_pools(address: str, pools: Iterable[HasRanges]) -> bool:
    """Whether `address` is in one of `pools` (for a one-off question; else PoolRanges)."""
    return PoolRanges.of(pools).holds(address)

"""The VIPs one VRRP instance owns, kept in address order under small changes.

A plan edit touches a few Services; the group may hold 50,000 addresses. The speaker must
not sort or copy all of them for each edit (that is time its adverts wait for), so the
group is changed by deltas: a set for membership and a sorted list of integer keys, where
an insert or removal is a bisection and a memmove. The advert lists the lowest 255.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable, Iterator

ADVERT_ADDRESSES = 255  # the advert's Count IPvX Addr field is one octet


def canonical(address: str) -> str:
    """One spelling per address (IPv6 compressed), so set membership means equality."""
    return parse(address)[1]


def parse(address: str) -> tuple[int, str]:
    """(order key, canonical text). A first plan brings 50,000 VIPs into the VRRP loop,
    and `ipaddress` costs ~2.5 us an address: IPv4 goes through inet_pton, in C, at ~1 us.
    IPv6 keeps `ipaddress` (inet_ntop spells v4-mapped addresses its own way)."""
    if isinstance(address, str) and ":" not in address:
        try:
            packed = socket.inet_pton(socket.AF_INET, address)
        except OSError:
            pass  # `ipaddress` says what is wrong with it
        else:
            return int.from_bytes(packed, "big"), socket.inet_ntop(socket.AF_INET, packed)
    ip = ipaddress.ip_address(address)
    return int(ip), str(ip)


class VipGroup:
    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self._by_key: dict[int, str] = {}
        self._keys: list[int] = []
        self.members: set[str] = set()  # the same addresses, for set arithmetic
        self._head: tuple[str, ...] | None = ()
        self.update(addresses, ())

    def update(self, added: Iterable[str], removed: Iterable[str]) -> tuple[list[str], list[str]]:
        """Apply a delta; returns what really changed (added, removed), each in order."""
        gone: list[tuple[int, str]] = []
        for address in removed:
            key = parse(address)[0]
            old = self._by_key.pop(key, None)
            if old is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
                self.members.discard(old)
                gone.append((key, old))
        new: list[tuple[int, str]] = []
        for address in added:
            key, text = parse(address)
            if key not in self._by_key:
                self._by_key[key] = text
                bisect.insort(self._keys, key)
                self.members.add(text)
                new.append((key, text))
        if new or gone:
            self._head = None
        new.sort()
        gone.sort()
        return [text for _, text in new], [text for _, text in gone]

    def replace(self, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
        """Become exactly `addresses`; returns (added, removed) like update()."""
        wanted = {canonical(a) for a in addresses}
        return self.update(wanted - self.members, self.members - wanted)

    def head(self) -> tuple[str, ...]:
        """The addresses an advert lists: the lowest ADVERT_ADDRESSES."""
        if self._head is None:
            self._head = tuple(self._by_key[k] for k in self._keys[:ADVERT_ADDRESSES])
        return self._head

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            return parse(address)[0] in self._by_key
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        """In address order."""
        by_key = self._by_key
        return (by_key[k] for k in list(self._keys))

    def __bool__(self) -> bool:
        return bool(self._keys)

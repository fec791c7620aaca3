"""The VIPs one VRRP instance owns, kept in address order under small changes.

A plan edit touches a few Services; the group may hold 50,000 addresses. The speaker must
not sort or copy all of them for each edit (that is time its adverts wait for), so the
group is changed by deltas: a set for membership and a sorted list of integer keys, where
an insert or removal is a bisection and a memmove. The advert lists the lowest 255.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator

ADVERT_ADDRESSES = 255  # the advert's Count IPvX Addr field is one octet


def canonical(address: str) -> str:
    """One spelling per address (IPv6 compressed), so set membership means equality."""
    return str(ipaddress.ip_address(address))


class VipGroup:
    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self._by_key: dict[int, str] = {}
        self._keys: list[int] = []
        self.members: set[str] = set()  # the same addresses, for set arithmetic
        self._head: tuple[str, ...] | None = ()
        self.update(addresses, ())

    def update(self, added: Iterable[str], removed: Iterable[str]) -> tuple[list[str], list[str]]:
        """Apply a delta; returns what really changed (added, removed), each in order."""
        gone: list[str] = []
        for address in removed:
            key = int(ipaddress.ip_address(address))
            old = self._by_key.pop(key, None)
            if old is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
                self.members.discard(old)
                gone.append(old)
        new: list[str] = []
        for address in added:
            ip = ipaddress.ip_address(address)
            key = int(ip)
            if key not in self._by_key:
                self._by_key[key] = str(ip)
                bisect.insort(self._keys, key)
                self.members.add(str(ip))
                new.append(str(ip))
        if new or gone:
            self._head = None
        return sorted(new, key=_key), sorted(gone, key=_key)

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
            return int(ipaddress.ip_address(address)) in self._by_key
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


def _key(address: str) -> int:
    return int(ipaddress.ip_address(address))

"""What every dataplane backend offers the daemon: `apply(desired)`, `current()` and
`connections()`.

A backend owns a narrow slice of the kernel (IPVS services whose VIP lies in our pools, or
one nftables table of our own) and converges it by difference: it never flushes, and
re-applying an unchanged desired state sends nothing to the kernel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from appliance.address import PoolRanges, host_port
from appliance.config import Pool
from appliance.model import DesiredState, VirtualService

Connections = Mapping[tuple[str, int, str], Mapping[str, int]]


log = logging.getLogger("appliance.dataplane")


class DataplaneError(Exception):
    """The kernel (or a tool) refused, or a prerequisite is missing. One line for the user."""


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What one `apply()` did, in words an operator reads (`tcp 198.18.32.1:80`)."""

    backend: str
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    draining: tuple[str, ...] = ()  # real servers at weight 0 waiting for their connections
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    full_replace: bool = False  # the whole table was loaded (first apply of a process)
    kernel_calls: int = 0  # transactions (nft) or netlink requests (ipvs) sent

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.changed or self.removed or self.kernel_calls)

    def summary(self) -> str:
        return (
            f"{self.backend}: +{len(self.added)} ~{len(self.changed)} -{len(self.removed)}"
            f" draining={len(self.draining)} warnings={len(self.warnings)}"
            f" in {self.seconds:.3f}s"
        )


class ReadErrors:
    """A periodic read that may fail (connections every 5 s): each new error is logged once,
    and the recovery once, so a broken tool does not fill the journal."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.last: str | None = None

    def failed(self, e: Exception) -> None:
        if str(e) != self.last:
            log.warning(
                "%s unreadable: %s", self.what, e, extra={"what": self.what, "error": str(e)}
            )
        self.last = str(e)

    def ok(self) -> None:
        if self.last is not None:
            log.info("%s readable again", self.what, extra={"what": self.what})
            self.last = None


class Dataplane(Protocol):
    """The interface the daemon programs against."""

    name: str

    async def apply(self, desired: DesiredState) -> ApplyReport:
        """Make the kernel match `desired.virtual_services`; touch only what we own."""
        ...

    async def current(self) -> tuple[VirtualService, ...]:
        """What the kernel holds of ours, as virtual services (read back, not remembered)."""
        ...

    async def connections(self) -> Connections:
        """Active connections, read from the kernel now: (vip, port, protocol) -> real
        server address -> count (IPVS ActiveConn; nftables: ESTABLISHED TCP/SCTP and any
        UDP conntrack entries DNATed to it). Never raises: on error, logs and returns {}."""
        ...

    def render(self, desired: DesiredState) -> str:
        """The full program as text (nft script or ipvsadm commands), for dry runs."""
        ...

    def pending_drains(self) -> int:
        """Real servers still draining: while > 0, call apply() again now and then."""
        ...

    def close(self) -> None:
        """Release sockets and threads (the kernel state stays)."""
        ...


@dataclass(frozen=True, slots=True)
class Ownership:
    """The VIP ranges of our pools: what a backend may touch and delete."""

    pools: PoolRanges[Pool] = field(default_factory=lambda: PoolRanges[Pool](()))

    @classmethod
    def of_pools(cls, pools: Iterable[Pool]) -> Ownership:
        return cls(PoolRanges.of(pools))

    def owns(self, address: str) -> bool:
        return self.pools.holds(address)


def vs_label(vs: VirtualService) -> str:
    """`tcp 198.18.32.1:80`, `udp [fd00:198:18:32::1]:53`: how reports name a service."""
    return f"{vs.protocol.lower()} {host_port(vs.vip, vs.port)}"


def rs_label(vs: VirtualService, address: str) -> str:
    return f"{vs_label(vs)} -> {host_port(address, vs.real_port)}"


def by_key(services: Sequence[VirtualService]) -> dict[tuple[str, int, str], VirtualService]:
    """Index by (vip, port, protocol); a duplicate key keeps the first (plan never emits one)."""
    out: dict[tuple[str, int, str], VirtualService] = {}
    for vs in services:
        out.setdefault(vs.key, vs)
    return out


async def run_tool(
    argv: Sequence[str], stdin: bytes | None = None, netns: str | None = None
) -> tuple[int, bytes, bytes]:
    """Run a kernel tool (nft, conntrack, sysctl), inside a network namespace if asked."""
    full = (["ip", "netns", "exec", netns, *argv]) if netns else list(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as e:
        raise DataplaneError(f"{full[0]}: not installed ({e.strerror})") from None
    out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out, err

"""What the loop drives, as narrow interfaces, and the two cluster sources behind one.

The loop only sees these Protocols, so its tests run against in-memory stand-ins and the
real adapters (nftables/IPVS, the VRRP speaker, the DNS server, the health checker, the
files or Kubernetes source) plug in unchanged.

The real ones are chosen and built in `appliance.wiring`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from appliance.cluster.files import FilesSource
from appliance.dataplane.base import Dataplane
from appliance.dns.server import DnsStats
from appliance.ha.status import HaStatus, InstanceStatus
from appliance.health.checker import TargetStatus
from appliance.health.state import Verdict
from appliance.health.targets import Target
from appliance.model import ClusterState, DesiredState, Record, Vip

if TYPE_CHECKING:
    from appliance.kube.link import KubeLink

FILES_POLL = 0.05  # seconds between stat() sweeps of the manifests folder


class SpeakerPart(Protocol):
    on_change: Callable[[InstanceStatus], None] | None

    async def start(self) -> None: ...
    # planned=False: VIPs of a saved plan, held at the planless priority (see Speaker).
    def set_vips(self, vips: Iterable[Vip], *, planned: bool = True) -> None: ...
    # ha.track: the causes failing now (cause -> what is wrong); cheap when unchanged.
    def track(self, failing: Mapping[str, str]) -> None: ...
    # Instances held in Fault by the operator (appliance ha resign): instance -> why.
    def hold(self, instances: Mapping[str, str]) -> None: ...
    def status(self) -> HaStatus: ...
    async def stop(self) -> None: ...


class DnsPart(Protocol):
    async def start(self) -> None: ...
    async def update(self, records: Iterable[Record]) -> object: ...
    def stats(self) -> DnsStats: ...
    async def stop(self) -> None: ...


class HealthPart(Protocol):
    on_change: Callable[[], None] | None  # a verdict to or from down: plan again
    # Each verdict change, told once when it happens: (target, before, after, error).
    on_transition: Callable[[Target, Verdict, Verdict, str], None] | None
    checks: int

    @property
    def results(self) -> Mapping[str, int]: ...  # checks done by outcome, for /metrics
    def update(self, targets: Iterable[Target]) -> None: ...
    def health(self) -> Mapping[tuple[str, str], bool]: ...
    def statuses(self) -> tuple[TargetStatus, ...]: ...
    async def run(self) -> None: ...


class SourcePart(Protocol):
    """Where ClusterState snapshots come from, and where status goes back to."""

    kind: str

    async def open(self) -> None: ...
    def states(self) -> AsyncIterator[ClusterState]: ...
    async def publish(self, state: ClusterState, desired: DesiredState) -> None: ...
    def status(self) -> Mapping[str, Any]: ...
    async def close(self) -> None: ...


class WebPart(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Parts:
    source: SourcePart
    dataplane: Dataplane | None = None  # the backends' own interface (dataplane.base)
    speaker: SpeakerPart | None = None  # None: no VRRP, this host owns every VIP
    dns: DnsPart | None = None
    health: HealthPart | None = None


# --- the real sources ----------------------------------------------------------------------


class FilesFeed:
    """A folder of manifests; nothing to write status back to."""

    kind = "files"

    def __init__(self, folder: str, interval: float = FILES_POLL) -> None:
        self.folder = folder
        self.interval = interval
        self.source = FilesSource(folder)
        self.snapshots = 0

    async def open(self) -> None:
        return None

    async def states(self) -> AsyncIterator[ClusterState]:
        async for state in self.source.watch(self.interval):
            self.snapshots += 1
            yield state

    async def publish(self, state: ClusterState, desired: DesiredState) -> None:
        return None

    def status(self) -> Mapping[str, Any]:
        return {"kind": "files", "folder": self.folder, "snapshots": self.snapshots}

    async def close(self) -> None:
        return None


class KubeFeed:
    """The Kubernetes API through KubeLink: list+watch, status write-back, Events, Lease."""

    kind = "kube"

    def __init__(self, link: KubeLink) -> None:
        self.link = link
        self._open = False

    async def open(self) -> None:
        await self.link.__aenter__()
        self._open = True

    def states(self) -> AsyncIterator[ClusterState]:
        return self.link.states()

    async def publish(self, state: ClusterState, desired: DesiredState) -> None:
        await self.link.publish(state, desired)

    def status(self) -> Mapping[str, Any]:
        s = self.link.status()
        return {
            "kind": "kube",
            "connected": s.connected,
            "writer": s.writer,
            "lease_error": s.lease_error,
            "events_sent": s.events_sent,
            "events_dropped": s.events_dropped,
            "resources": [
                {
                    "kind": r.kind,
                    "synced": r.synced,
                    "watching": r.watching,
                    "relists": r.relists,
                    "failures": r.failures,
                    "last_error": r.last_error,
                }
                for r in s.resources
            ],
        }

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.link.__aexit__(None, None, None)


def close_dataplane(part: Dataplane | None) -> None:
    """Its sockets and threads (the kernel state stays); a failure here changes nothing."""
    if part is not None:
        with contextlib.suppress(Exception):
            part.close()

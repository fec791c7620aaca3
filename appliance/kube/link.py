"""Everything the daemon needs from the Kubernetes API, behind one object.

    async with KubeLink.from_config(config, identity=socket.gethostname()) as link:
        async for state in link.states():
            desired = planner.plan(state, health)
            ...  # dataplane, announcer, DNS
            await link.publish(state, desired)

`states()` yields ClusterState snapshots (the same type the files source yields);
`publish()` writes Service status and Events when this host holds the Lease (and
`cluster.write_status` is on), and re-tries failed writes in the background with backoff
until the next publish replaces them. `status()` says how the reflectors and the Lease are
doing, for the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import structlog

from appliance.cluster.kube import KubeSource, ResourceStatus
from appliance.config import Config
from appliance.kube.api import KubeApi, connection_from_config
from appliance.kube.events import EventRecorder
from appliance.kube.lease import LeaseElector
from appliance.kube.status import StatusWriter, SyncReport
from appliance.model import ClusterState, DesiredState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LinkStatus:
    resources: tuple[ResourceStatus, ...]
    connected: bool
    writer: bool  # this host holds the Lease
    lease_error: str
    events_sent: int
    events_dropped: int
    last_sync: SyncReport | None


class KubeLink:
    def __init__(self, api: KubeApi, config: Config, identity: str) -> None:
        self.api = api
        self.config = config
        self.source = KubeSource(api)
        self.elector = LeaseElector(api, config.cluster.lease_namespace, identity)
        self.events = EventRecorder(api, identity)
        self.writer = StatusWriter(api, config, self.events, is_writer=self._may_write)
        self._tasks: list[asyncio.Task[None]] = []
        self._retry: asyncio.Task[None] | None = None
        self._last: SyncReport | None = None

    @classmethod
    def from_config(cls, config: Config, identity: str) -> KubeLink:
        """Raises KubeConfigError (one line) when the connection settings are unusable."""
        return cls(KubeApi(connection_from_config(config.cluster)), config, identity)

    def _may_write(self) -> bool:
        return self.config.cluster.write_status and self.elector.is_leader()

    async def __aenter__(self) -> KubeLink:
        if self.config.cluster.write_status:
            self._tasks.append(asyncio.create_task(self.elector.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [*self._tasks, *([self._retry] if self._retry else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.api.close()

    def states(self) -> AsyncGenerator[ClusterState, None]:
        return self.source.watch()

    async def publish(self, state: ClusterState, desired: DesiredState) -> SyncReport:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        report = await self.writer.sync(state, desired)
        self._last = report
        if report.retry:
            for key, why in report.failed[:3]:
                log.warning("status not written", service=key, error=why)
            self._retry = asyncio.create_task(self._again(state, desired))
        return report

    async def _again(self, state: ClusterState, desired: DesiredState) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            report = await self.writer.sync(state, desired)
            self._last = report
            if not report.retry:
                return
            delay = min(delay * 2, 30.0)

    def status(self) -> LinkStatus:
        return LinkStatus(
            self.source.status(),
            self.source.connected,
            self._may_write(),
            self.elector.last_error,
            self.events.sent,
            self.events.dropped,
            self._last,
        )

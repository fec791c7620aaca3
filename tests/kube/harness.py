"""Run a KubeSource against the stand-in and collect its snapshots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from appliance.cluster.kube import KubeSource
from appliance.kube.api import Connection, KubeApi
from appliance.model import ClusterState
from tests.support.fake_apiserver import FakeApiServer


class Watched:
    def __init__(self, source: KubeSource) -> None:
        self.source = source
        self.snapshots: list[ClusterState] = []
        self._new = asyncio.Event()

    async def _run(self) -> None:
        async for state in self.source.watch():
            self.snapshots.append(state)
            self._new.set()

    async def until(
        self, check: Callable[[ClusterState], bool], timeout: float = 10
    ) -> ClusterState:
        async def wait() -> ClusterState:
            while True:
                if self.snapshots and check(self.snapshots[-1]):
                    return self.snapshots[-1]
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def watching(
    fake: FakeApiServer, api_kw: dict[str, Any] | None = None, **source_kw: Any
) -> AsyncIterator[Watched]:
    async with KubeApi(Connection(fake.url, token=fake.token), **(api_kw or {})) as api:
        watched = Watched(KubeSource(api, **source_kw))
        task = asyncio.create_task(watched._run())
        try:
            yield watched
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

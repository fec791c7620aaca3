"""The Kubernetes API as the cluster source: list, then watch, for ever.

One reflector per resource (Services, EndpointSlices, Nodes, Ingresses), the way
client-go's informers work: list (remember the list's resourceVersion), watch from that
version with `allowWatchBookmarks` (bookmarks move the version on while nothing we watch
changes, so a reconnect rarely needs a relist), resume from the last version seen when
a watch ends, relist on 410 Gone (the version was compacted away), and back off with
full jitter on any other failure so a fleet of LB hosts does not hammer a recovering
API server in step.

While the API cannot be reached nothing is removed: the stores keep the last objects
they saw, so the last good ClusterState stays in force and no VIP is withdrawn because
the API is down. When it answers again, a relist replaces each store at once (objects
deleted meanwhile disappear then, not before).

Objects go through `manifests.object_from_dict`, the converter the files source uses; an
object it refuses becomes a Refusal in the snapshot. Objects equal to their former self
stay the same Python object and `build_state(previous=...)` keeps slices tuples, so the
planner's per-Service cache holds across snapshots.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.cluster.manifests import KubeObject, ManifestError, build_state, object_from_dict
from appliance.kube.api import ApiError, KubeApi
from appliance.model import ClusterState, Refusal


@dataclass(frozen=True, slots=True)
class Resource:
    path: str  # the collection across all namespaces
    kind: str
    api_version: str


SERVICES = Resource("/api/v1/services", "Service", "v1")
ENDPOINT_SLICES = Resource(
    "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", "discovery.k8s.io/v1"
)
NODES = Resource("/api/v1/nodes", "Node", "v1")
INGRESSES = Resource("/apis/networking.k8s.io/v1/ingresses", "Ingress", "networking.k8s.io/v1")
RESOURCES = (SERVICES, ENDPOINT_SLICES, NODES, INGRESSES)

Item = KubeObject | Refusal


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    """How one reflector is doing, for the status page and logs."""

    kind: str
    synced: bool  # listed at least once
    watching: bool  # a watch is open right now
    resource_version: str
    relists: int
    failures: int  # consecutive
    last_error: str


@dataclass(slots=True)
class _Reflector:
    resource: Resource
    store: dict[str, Item]
    resource_version: str = ""
    synced: bool = False
    watching: bool = False
    relists: int = 0
    failures: int = 0
    last_error: str = ""

    def status(self) -> ResourceStatus:
        r = self.resource
        return ResourceStatus(
            r.kind,
            self.synced,
            self.watching,
            self.resource_version,
            self.relists,
            self.failures,
            self.last_error,
        )


class KubeSource:
    """Snapshots of the cluster from the API. `watch()` yields the first full snapshot
    once every resource has been listed, then each changed one."""

    def __init__(
        self,
        api: KubeApi,
        resources: tuple[Resource, ...] = RESOURCES,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
        watch_timeout: tuple[int, int] = (300, 600),
        debounce: float = 0.002,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.watch_timeout = watch_timeout  # server-side timeoutSeconds, random in range
        self.debounce = debounce
        self._rng = rng or random.Random()
        self._sleep = sleep  # tests pass a virtual clock to live through an hour-long outage
        self._reflectors = [_Reflector(r, {}) for r in resources]
        self._changed = asyncio.Event()
        self._state: ClusterState | None = None

    @property
    def state(self) -> ClusterState | None:
        """The last snapshot (None before every resource was listed once)."""
        return self._state

    def status(self) -> tuple[ResourceStatus, ...]:
        return tuple(r.status() for r in self._reflectors)

    @property
    def connected(self) -> bool:
        return all(r.watching for r in self._reflectors)

    async def watch(self) -> AsyncGenerator[ClusterState, None]:
        tasks = [asyncio.create_task(self._reflect(r)) for r in self._reflectors]
        try:
            while True:
                await self._changed.wait()
                if self.debounce:
                    await asyncio.sleep(self.debounce)  # a burst of events, one snapshot
                self._changed.clear()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]  # a bug, not the API
                if not all(r.synced for r in self._reflectors):
                    continue
                self._state = self._build()
                yield self._state
        finally:
            for task in tasks:
                task.cancel()
            # Shutting down: what a reflector died of no longer matters.
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- one resource -------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        return self._rng.uniform(ceiling / 2, ceiling)  # jittered, never zero

    async def _reflect(self, ref: _Reflector) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list(ref)
                    need_list = False
                await self._watch(ref)
            except ApiError as e:
                ref.watching = False
                if e.gone:
                    need_list = True
                    ref.relists += 1
                    ref.last_error = e.message
                    if ref.failures == 0:
                        ref.failures = 1  # relist at once; a second 410 in a row backs off
                        continue
                elif e.code == 404 and need_list and not ref.synced:
                    # The server does not serve this kind (an old cluster without
                    # networking.k8s.io/v1 Ingress): none of them, rather than no snapshot
                    # at all. Looked for again now and then.
                    ref.synced = True
                    ref.last_error = f"not served by this API server: {e}"
                    self._changed.set()
                    await self._sleep(self.backoff_max)
                    continue
                else:
                    ref.last_error = str(e)
                ref.failures += 1
                await self._sleep(self._backoff(ref.failures - 1))

    async def _list(self, ref: _Reflector) -> None:
        res = ref.resource
        answer = await self.api.request("GET", res.path)
        items = answer.get("items")
        meta = answer.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if not isinstance(items, list) or not isinstance(version, str):
            raise ApiError(0, "", f"list {res.path}: not a {res.kind}List")
        store: dict[str, Item] = {}
        for raw in items:
            key, item = self._convert(res, raw)
            old = ref.store.get(key)
            store[key] = old if old is not None and old == item else item
        changed = store.keys() != ref.store.keys() or any(
            item is not ref.store[k] for k, item in store.items()
        )
        ref.store = store
        ref.resource_version = version
        ref.failures = 0
        if changed or not ref.synced:
            ref.synced = True
            self._changed.set()

    async def _watch(self, ref: _Reflector) -> None:
        res = ref.resource
        params = {
            "resourceVersion": ref.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._rng.randint(*self.watch_timeout)),
        }
        ref.watching = True
        async for event in self.api.watch(res.path, params):
            ref.failures = 0
            kind = event.get("type")
            raw = event["object"]
            meta = raw.get("metadata")
            version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
            if kind == "BOOKMARK":
                if isinstance(version, str):
                    ref.resource_version = version
                continue
            key, item = self._convert(res, raw)
            if kind == "DELETED":
                if ref.store.pop(key, None) is not None:
                    self._changed.set()
            elif kind in ("ADDED", "MODIFIED"):
                old = ref.store.get(key)
                if old is None or old != item:
                    ref.store[key] = item
                    self._changed.set()
            if isinstance(version, str):
                ref.resource_version = version
        ref.watching = False  # the server closed it (timeoutSeconds): watch again from here

    def _convert(self, res: Resource, raw: Any) -> tuple[str, Item]:
        obj = dict(raw) if isinstance(raw, Mapping) else {}
        obj.setdefault("kind", res.kind)  # list items come without them
        obj.setdefault("apiVersion", res.api_version)
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        name = str(meta.get("name") or "")
        namespace = "" if res.kind == "Node" else str(meta.get("namespace") or "")
        key = f"{namespace}/{name}" if namespace else name
        try:
            item: Item | None = object_from_dict(obj)
        except ManifestError as e:
            item = Refusal(res.kind, namespace, name, str(e))
        except RecursionError:
            item = Refusal(res.kind, namespace, name, "nested too deeply")
        if item is None:  # not a kind we read: the API answered with something else
            item = Refusal(res.kind, namespace, name, f"unexpected {obj.get('kind')!r}")
        return key, item

    def _build(self) -> ClusterState:
        objects: list[KubeObject] = []
        refused: list[Refusal] = []
        for ref in self._reflectors:
            for key in sorted(ref.store):
                item = ref.store[key]
                if isinstance(item, Refusal):
                    refused.append(item)
                else:
                    objects.append(item)
        return build_state(objects, refused, previous=self._state)

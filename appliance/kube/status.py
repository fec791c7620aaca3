"""Status write-back: each LoadBalancer Service we serve shows its VIPs in
`status.loadBalancer.ingress` (so `kubectl get svc` shows EXTERNAL-IP, not `<pending>`),
and `kubectl describe svc` shows Events saying why when it cannot.

`sync(state, desired)` compares what the plan allocated with what each Service's status
says and merge-patches `services/<name>/status` where they differ; a Service that stops
being ours (its type or class changed) has its ingress cleared when we wrote it (this
process did, or its addresses lie in our pools), never another controller's. Only the
writer that holds the Lease (appliance.kube.lease) writes; the others plan the same
allocation (it is deterministic and sticky) and stay silent.

A patch is sent once per (wanted addresses, Service resourceVersion): until the watch
brings the Service back with its new status, the same sync is not repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from appliance.address import PoolRanges
from appliance.config import Config
from appliance.kube.api import ApiError, KubeApi
from appliance.kube.events import EventRecorder, EventType, Regarding
from appliance.model import ClusterState, DesiredState, Service
from appliance.plan import is_ours

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SyncReport:
    patched: tuple[str, ...] = ()  # service keys whose status we wrote
    cleared: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (service key, why)
    events: int = 0
    skipped: bool = False  # not the writer

    @property
    def retry(self) -> bool:
        """Some write failed for a reason that may pass: sync again later."""
        return bool(self.failed)


@dataclass(slots=True)
class _Pending:
    patched: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    events: int = 0


def _ingress(addresses: tuple[str, ...], ip_mode: bool) -> dict[str, Any]:
    if not addresses:
        return {"status": {"loadBalancer": {"ingress": None}}}
    entries = [{"ip": a, "ipMode": "VIP"} if ip_mode else {"ip": a} for a in addresses]
    return {"status": {"loadBalancer": {"ingress": entries}}}


class StatusWriter:
    def __init__(
        self,
        api: KubeApi,
        config: Config,
        events: EventRecorder | None = None,
        is_writer: Callable[[], bool] = lambda: True,
        concurrency: int = 32,
    ) -> None:
        self.api = api
        self.config = config
        self.events = events
        self.is_writer = is_writer
        self.ip_mode = True  # dropped after the server refuses the field
        self._limit = asyncio.Semaphore(concurrency)
        self._sent: dict[str, tuple[tuple[str, ...], str]] = {}
        self._written: set[str] = set()  # services whose ingress this process wrote
        self._real_servers: dict[str, frozenset[tuple[str, str, int]]] = {}
        self._problems: dict[str, tuple[str, ...]] = {}
        self._in_pools = PoolRanges.of(config.pools).holds

    def wanted(self, svc: Service, desired: DesiredState) -> tuple[str, ...] | None:
        """The ingress addresses this Service should show; None: not ours to touch."""
        if is_ours(svc, self.config):
            alloc = desired.allocations.get(svc.key)
            return alloc.addresses if alloc is not None else ()
        held = svc.status_ingress_ips
        if held and (svc.key in self._written or all(self._in_pools(a) for a in held)):
            return ()
        return None

    async def sync(self, state: ClusterState, desired: DesiredState) -> SyncReport:
        if not self.is_writer():
            self._sent.clear()  # whoever writes now may undo ours: look afresh when back
            return SyncReport(skipped=True)
        out = _Pending()
        jobs = []
        for key, svc in state.services.items():
            wanted = self.wanted(svc, desired)
            if wanted is None or wanted == svc.status_ingress_ips:
                self._sent.pop(key, None)
                continue
            stamp = (wanted, svc.resource_version)
            if self._sent.get(key) == stamp:
                continue  # sent; the watch has not brought the Service back yet
            jobs.append(self._write(svc, wanted, stamp, out))
        jobs.extend(self._notices(state, desired, out))
        if jobs:
            await asyncio.gather(*jobs)
        if self.events is not None:
            keep = {("Service", s.namespace, s.name) for s in state.services.values()}
            keep.update(("Service", r.namespace, r.name) for r in desired.refused)
            self.events.forget(keep)
        for gone in [k for k in self._sent if k not in state.services]:
            del self._sent[gone]
        self._written &= state.services.keys()
        return SyncReport(
            tuple(sorted(out.patched)),
            tuple(sorted(out.cleared)),
            tuple(sorted(out.failed)),
            out.events,
        )

    async def _write(
        self,
        svc: Service,
        wanted: tuple[str, ...],
        stamp: tuple[tuple[str, ...], str],
        out: _Pending,
    ) -> None:
        path = f"/api/v1/namespaces/{svc.namespace}/services/{svc.name}/status"
        async with self._limit:
            try:
                try:
                    await self._patch(path, wanted)
                except ApiError as e:
                    if not (e.code == 422 and "ipMode" in e.message and self.ip_mode):
                        raise
                    log.info("the API server refuses ipMode: writing ingress without it",
                             error=str(e))  # fmt: skip
                    self.ip_mode = False
                    await self._patch(path, wanted)
            except ApiError as e:
                if e.code == 404:
                    return  # deleted meanwhile; the watch will say so
                out.failed.append((svc.key, str(e)))
                return
        # Noted only once the API took it: a sync cancelled mid-flight (the daemon cancels
        # a publish that a newer plan supersedes) leaves nothing marked as sent.
        self._sent[svc.key] = stamp
        if wanted:
            self._written.add(svc.key)
            out.patched.append(svc.key)
            note = f"Assigned IP {', '.join(wanted)}"
            await self._event(svc, "Normal", "IPAllocated", "Allocate", note, out)
        else:
            self._written.discard(svc.key)
            out.cleared.append(svc.key)
            why = "not ours any more" if not is_ours(svc, self.config) else "no address left"
            note = f"Released IP {', '.join(svc.status_ingress_ips)} ({why})"
            await self._event(svc, "Normal", "IPReleased", "Release", note, out)

    async def _patch(self, path: str, wanted: tuple[str, ...]) -> None:
        await self.api.request(
            "PATCH",
            path,
            _ingress(wanted, self.ip_mode),
            content_type="application/merge-patch+json",
        )

    async def _event(
        self, svc: Service, type_: EventType, reason: str, action: str, note: str, out: _Pending
    ) -> None:
        if self.events is None:
            return
        about = Regarding("Service", svc.namespace, svc.name, svc.uid)
        if await self.events.emit(about, type_, reason, action, note):
            out.events += 1

    def _notices(self, state: ClusterState, desired: DesiredState, out: _Pending) -> list[Any]:
        """Events that go with no status write: problems, refusals, real server changes."""
        if self.events is None:
            return []
        jobs: list[Any] = []
        problems: dict[str, list[str]] = {}
        for p in desired.problems:
            if p.kind == "Service":
                problems.setdefault(p.key, []).append(p.reason)
        for key, reasons in problems.items():
            svc = state.services.get(key)
            if svc is None or self._problems.get(key) == tuple(reasons):
                continue
            failed = key not in desired.allocations or not desired.allocations[key].addresses
            reason = "AllocationFailed" if failed else "ServiceDegraded"
            jobs.append(self._event(svc, "Warning", reason, "Allocate", "; ".join(reasons), out))
        self._problems = {k: tuple(v) for k, v in problems.items()}
        for r in desired.refused:
            if r.kind == "Service" and r.name:
                about = Regarding("Service", r.namespace, r.name)
                jobs.append(self._refusal(about, r.reason, out))
        real = _real_servers(desired)
        for key, servers in real.items():
            before = self._real_servers.get(key)
            svc = state.services.get(key)
            if before is not None and before != servers and svc is not None:
                note = "real servers: " + (", ".join(_names(servers)) or "none")
                note += " (was " + (", ".join(_names(before)) or "none") + ")"
                jobs.append(self._event(svc, "Normal", "RealServersChanged", "Update", note, out))
        self._real_servers = real
        return jobs

    async def _refusal(self, about: Regarding, reason: str, out: _Pending) -> None:
        assert self.events is not None
        if await self.events.emit(about, "Warning", "Refused", "Validate", reason):
            out.events += 1


def _real_servers(desired: DesiredState) -> dict[str, frozenset[tuple[str, str, int]]]:
    found: dict[str, set[tuple[str, str, int]]] = {}
    for vs in desired.virtual_services:
        servers = found.setdefault(vs.service, set())
        servers.update((r.node, r.address, r.weight) for r in vs.real_servers)
    return {k: frozenset(v) for k, v in found.items()}


def _names(servers: frozenset[tuple[str, str, int]]) -> list[str]:
    return sorted({node for node, _, _ in servers})

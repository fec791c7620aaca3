"""Who writes status: the holder of a coordination.k8s.io/v1 Lease.

Why a Lease and not the VRRP master: the writer must be able to reach the API, which is
exactly what the Lease proves (a VRRP master cut off from the API server cannot write
anyway, and a backup that can would stay silent); VRRP may run several instances with
different masters per pool, or none at all (`ha.interface` unset), while status needs
one writer for the whole cluster. Allocation is deterministic and sticky, so two hosts
that both believed they held the Lease for a moment would write the same addresses.

The protocol is client-go's leaderelection: read the Lease; take it when it is free,
ours, or its holder has not renewed for `leaseDurationSeconds`; every write carries the
resourceVersion read, so of two hosts racing for it one gets 409 Conflict and stays a
follower. The holder renews every `renew` seconds and counts itself the holder only
until `duration` after its last successful renewal (minus a margin), so a holder cut
off from the API stops writing before anyone else can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable
from typing import Any

import structlog

from appliance.kube.api import ApiError, KubeApi
from appliance.kube.events import micro_time

log = structlog.get_logger(__name__)


def _parse_time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        identity: str,
        name: str = "appliance-status-writer",
        duration: float = 15.0,
        renew: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew = duration, renew
        self._clock, self._wall = clock, wall
        self._valid_until = 0.0  # monotonic time our hold ends unless renewed
        self.last_error = ""
        self.changed = asyncio.Event()  # set whenever leadership flips

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def is_leader(self) -> bool:
        return self._clock() < self._valid_until

    def _set(self, leader: bool, since: float) -> None:
        was = self.is_leader()
        # A margin of one renew period: stop before another host may start.
        self._valid_until = since + max(self.duration - self.renew, 0.0) if leader else 0.0
        if was != self.is_leader():
            log.info(
                "lease",
                lease=f"{self.namespace}/{self.name}",
                role="leader" if leader else "follower",
            )
            self.changed.set()

    def _spec(self, acquire: str | None, transitions: int) -> dict[str, Any]:
        now = micro_time(self._wall())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquire or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """One round: take or renew the Lease if we may. True if we hold it now."""
        started = self._clock()
        try:
            lease = await self.api.request("GET", f"{self.path}/{self.name}")
        except ApiError as e:
            if e.code != 404:
                return self._failed(e)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, 0),
            }
            try:
                await self.api.request("POST", self.path, body)
            except ApiError as e2:
                return self._failed(e2)
            self._set(True, started)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        ours = holder == self.identity
        renewed = _parse_time(spec.get("renewTime"))
        seconds = spec.get("leaseDurationSeconds") or self.duration
        expired = renewed is None or (
            self._wall() - renewed > datetime.timedelta(seconds=float(seconds))
        )
        if not ours and holder and not expired:
            self._set(False, started)
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquire = spec.get("acquireTime") if ours else None
        lease["spec"] = {**spec, **self._spec(acquire, transitions)}
        try:
            await self.api.request("PUT", f"{self.path}/{self.name}", lease)
        except ApiError as e:
            return self._failed(e)
        self._set(True, started)
        return True

    def _failed(self, e: ApiError) -> bool:
        self.last_error = str(e)
        if e.code == 409:  # someone else wrote first: they hold it
            self._set(False, 0.0)
            return False
        # Unreachable: keep what we had until it runs out (is_leader checks the clock).
        if not self.is_leader():
            self.changed.set()
        return self.is_leader()

    async def run(self) -> None:
        """Hold (or wait for) the Lease until cancelled; then give it up if ours."""
        try:
            while True:
                await self.try_acquire()
                await asyncio.sleep(self.renew)
        finally:
            if self.is_leader():
                with contextlib.suppress(ApiError, asyncio.CancelledError):
                    await asyncio.shield(self.release())

    async def release(self) -> None:
        """Step down so a peer takes over at once (client-go's ReleaseOnCancel)."""
        self._set(False, 0.0)
        lease = await self.api.request("GET", f"{self.path}/{self.name}")
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
        await self.api.request("PUT", f"{self.path}/{self.name}", lease)

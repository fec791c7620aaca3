"""Kubernetes Events (events.k8s.io/v1) about Services, rate-limited.

A flapping object must not flood the API (or etcd, where every Event is a write): like
client-go's EventSourceObjectSpamFilter, each object has a token bucket (a burst, then
one Event per `refill` seconds), and an Event identical to the last one sent for that
object and reason within `dedupe` seconds is dropped outright. A global bucket caps the
rate across all objects. What is dropped is counted, never queued: Events are hints for
`kubectl describe`, the status page has the whole truth.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from appliance.kube.api import ApiError, KubeApi

log = structlog.get_logger(__name__)

CONTROLLER = "appliance.io/load-balancer"
NOTE_MAX = 1024  # bytes; the API refuses longer notes
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class EventRecorder:
    def __init__(
        self,
        api: KubeApi,
        instance: str,
        burst: int = 5,
        refill: float = 60.0,
        dedupe: float = 600.0,
        global_burst: int = 50,
        global_refill: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.instance = instance  # reportingInstance: this LB host
        self.burst, self.refill, self.dedupe = burst, refill, dedupe
        self.global_burst, self.global_refill = global_burst, global_refill
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._global = _Bucket(float(global_burst), clock())
        self._last: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def _take(self, bucket: _Bucket, burst: int, refill: float, now: float) -> bool:
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) / refill)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def allow(self, about: Regarding, reason: str, note: str) -> bool:
        """Whether an Event may go out now (and, if so, counts it)."""
        now = self._clock()
        key = (about.kind, about.namespace, about.name)
        last = self._last.get((*key, reason))
        if last is not None and last[0] == note and now - last[1] < self.dedupe:
            self.dropped += 1
            return False
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        if not self._take(bucket, self.burst, self.refill, now):
            self.dropped += 1
            return False
        if not self._take(self._global, self.global_burst, self.global_refill, now):
            bucket.tokens += 1.0  # not this object's fault
            self.dropped += 1
            return False
        self._last[(*key, reason)] = (note, now)
        return True

    def forget(self, keep: set[tuple[str, str, str]]) -> None:
        """Drop the memory of objects that are gone, so it does not grow for ever."""
        self._buckets = {k: v for k, v in self._buckets.items() if k in keep}
        self._last = {k: v for k, v in self._last.items() if k[:3] in keep}

    async def emit(
        self, about: Regarding, type_: EventType, reason: str, action: str, note: str
    ) -> bool:
        """Send one Event if the limits allow; True if the API took it."""
        if not self.allow(about, reason, note):
            return False
        body = event_body(about, type_, reason, action, note, self.instance)
        path = f"/apis/events.k8s.io/v1/namespaces/{about.namespace}/events"
        try:
            await self.api.request("POST", path, body)
        except ApiError as e:
            self.failed += 1
            log.warning("event not sent", reason=reason, about=f"{about.namespace}/{about.name}",
                        error=str(e))  # fmt: skip
            return False
        self.sent += 1
        return True


def micro_time(now: datetime.datetime | None = None) -> str:
    """metav1.MicroTime as the API writes it."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    about: Regarding, type_: EventType, reason: str, action: str, note: str, instance: str
) -> dict[str, object]:
    encoded = note.encode()
    if len(encoded) > NOTE_MAX:
        note = encoded[: NOTE_MAX - 3].decode(errors="ignore") + "..."
    regarding: dict[str, str] = {
        "kind": about.kind,
        "namespace": about.namespace,
        "name": about.name,
        "apiVersion": about.api_version,
    }
    if about.uid:
        regarding["uid"] = about.uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            # client-go's naming: the object's name and a unique suffix
            "name": f"{about.name or 'object'}.{secrets.token_hex(8)}",
            "namespace": about.namespace,
        },
        "eventTime": micro_time(),
        "reportingController": CONTROLLER,
        "reportingInstance": instance,
        "action": action,
        "reason": reason,
        "regarding": regarding,
        "note": note,
        "type": type_,
    }

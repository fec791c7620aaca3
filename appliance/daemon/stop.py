"""How the daemon stops: resign VRRP first (the peer takes over at once), then the rest,
all within STOP_BUDGET, which systemd and the peer expect; each part bounded, so one that
hangs cannot hold the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import structlog

from appliance.daemon.parts import Parts, SourcePart, close_dataplane
from appliance.daemon.statestore import SnapshotStore

log = structlog.get_logger("appliance.daemon")

STOP_BUDGET = 0.9  # seconds from SIGTERM to exit
SAVE_BUDGET = 3.0  # seconds to write a pending snapshot at stop, after the VIPs are released


async def stop_parts(
    parts: Parts,
    source: SourcePart,
    snapshots: SnapshotStore | None,
    tasks: Iterable[asyncio.Task[Any]],
) -> None:
    """The loop's own tasks are cancelled; the parts stop in the order that keeps the VIPs
    served longest elsewhere: VRRP, the tasks, DNS, the source, the saved state, the
    dataplane's sockets (its kernel state stays, for the next start or the peer)."""
    deadline = time.monotonic() + STOP_BUDGET
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if parts.speaker is not None:
        await _bounded("vrrp", parts.speaker.stop(), deadline - 0.2)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, max(0.01, deadline - 0.2 - time.monotonic()))
    if parts.dns is not None:
        await _bounded("dns", parts.dns.stop(), deadline - 0.1)
    await _bounded("source", source.close(), deadline)
    if snapshots is not None and snapshots.pending:
        until = max(deadline, time.monotonic() + SAVE_BUDGET)
        await _bounded("saved state", snapshots.flush(), until)
    close_dataplane(parts.dataplane)


async def _bounded(what: str, coro: Any, until: float) -> None:
    try:
        await asyncio.wait_for(coro, max(0.01, until - time.monotonic()))
    except TimeoutError:
        log.warning("stop: gave up waiting", part=what)
    except Exception as e:
        log.warning("stop failed", part=what, error=str(e))

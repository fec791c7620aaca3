"""The state files on disk: read once at start, written atomically on change.

- `allocations.json` (AllocationStore): every Service's VIPs, the previous plan's claims;
- `last-state.json` (SnapshotStore): the last cluster snapshot the live source delivered,
  served at start while the source has not answered (a reboot during an API outage).

The codecs are `appliance.plan.statefile` and `appliance.plan.snapshotfile` (pure); this is
only the I/O around them. Nothing here can stop the daemon: an unreadable or corrupt file is
refused with one log line and the daemon goes on as with no file; a failed write is logged
and tried again at the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import structlog

from appliance.model import Allocation, ClusterState
from appliance.plan.snapshotfile import SavedState, decode_state, encode_state
from appliance.plan.statefile import StateFileError, decode_allocations, encode_allocations

log = structlog.get_logger("appliance.daemon")

FILE_NAME = "allocations.json"
SNAPSHOT_FILE_NAME = "last-state.json"
SNAPSHOT_EVERY = 5.0  # seconds: at most one snapshot write this often (50,000 Services: ~1 s)


class AllocationStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._written: bytes | None = None  # what the file holds, as far as we know
        self._write_error: str | None = None  # the last failure, said once

    @classmethod
    def in_dir(cls, state_dir: str) -> AllocationStore:
        return cls(os.path.join(state_dir, FILE_NAME))

    def load(self) -> dict[str, Allocation]:
        """The allocations of the last run; {} when there is no file or it is refused."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        except OSError as e:
            self._refuse(f"cannot read: {e.strerror or e}")
            return {}
        try:
            allocations = decode_allocations(data)
        except StateFileError as e:
            self._refuse(str(e))
            return {}
        self._written = data
        return allocations

    def _refuse(self, reason: str) -> None:
        log.error(
            f"state file {self.path} refused: {reason}; VIPs are allocated afresh",
            file=self.path,
            reason=reason,
        )

    def save(self, allocations: Mapping[str, Allocation]) -> bool:
        """Write the allocations if they changed; True when the file now holds them."""
        data = encode_allocations(allocations)
        if data == self._written:
            return True
        try:
            write_atomically(self.path, data)
        except OSError as e:
            error = f"cannot write: {e.strerror or e}"
            if error != self._write_error:
                log.error(f"state file {self.path}: {error}", file=self.path, reason=error)
                self._write_error = error
            return False
        self._written, self._write_error = data, None
        return True


class SnapshotStore:
    """`last-state.json`: the newest live snapshot, written off the loop and at most once
    every `every` seconds (the newest one always gets written: a burst of changes costs
    one write at the end of the interval), and at a clean stop if one is pending.

        store.offer(state, time.time())     # after each sync of a live snapshot: cheap
        await store.run()                   # the writer, a task of the daemon's
        await store.flush()                 # at stop: the pending one, now
    """

    def __init__(
        self, path: str, every: float = SNAPSHOT_EVERY, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.every = every
        self.clock = clock
        self._pending: tuple[ClusterState, float] | None = None
        self._written: ClusterState | None = None  # what the file holds, as far as we know
        self._write_error: str | None = None  # the last failure, said once
        self._lock = threading.Lock()  # one write at a time (the writer's, or flush's)
        self._wake: asyncio.Event | None = None
        self.writes: Counter[str] = Counter()  # ok | skipped (unchanged) | failed
        self.last_write_at: float | None = None  # wall clock
        self.last_write_seconds: float | None = None  # encode + write + fsync
        self.last_write_bytes: int | None = None

    @classmethod
    def in_dir(cls, state_dir: str, every: float = SNAPSHOT_EVERY) -> SnapshotStore:
        return cls(os.path.join(state_dir, SNAPSHOT_FILE_NAME), every)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def load(self) -> SavedState | None:
        """The snapshot of the last run; None when there is none or it is refused. Blocking
        (50,000 Services: ~3 s): the daemon calls it in a thread."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._refuse(f"cannot read: {e.strerror or e}")
            return None
        try:
            saved = decode_state(data)
        except StateFileError as e:
            self._refuse(str(e))
            return None
        with self._lock:
            if self._written is None:
                self._written = saved.state
        return saved

    def _refuse(self, reason: str) -> None:
        log.error(
            f"saved cluster state {self.path} refused: {reason}; nothing is served until "
            "the cluster source answers",
            file=self.path,
            reason=reason,
        )

    def offer(self, state: ClusterState, at: float) -> None:
        """A live snapshot was planned (received at `at`, wall clock): write it soon.
        The same snapshot offered again costs nothing."""
        pending = self._pending
        if (pending is not None and pending[0] is state) or state is self._written:
            return
        self._pending = (state, at)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """The writer: the newest pending snapshot, then a pause of `every` seconds."""
        self._wake = asyncio.Event()
        if self._pending is not None:
            self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_pending()
            await asyncio.sleep(self.every)

    async def flush(self) -> None:
        """Write the pending snapshot now, whatever the interval (a clean stop); also waits
        for a write in progress."""
        await self._write_pending()

    async def _write_pending(self) -> None:
        item, self._pending = self._pending, None
        if not await asyncio.to_thread(self._write, item) and self._pending is None:
            self._pending = item  # not written (a full disk): again after the pause
            if self._wake is not None:
                self._wake.set()

    def _write(self, item: tuple[ClusterState, float] | None) -> bool:
        """In a thread: encode, compare, write, fsync. Holds the lock, so a write cancelled
        on the loop (the thread goes on) is waited for by the next one."""
        with self._lock:
            if item is None:
                return True
            state, at = item
            if state is self._written or state == self._written:
                self.writes["skipped"] += 1
                return True
            t0 = time.perf_counter()
            data = encode_state(state, at)
            try:
                write_atomically(self.path, data)
            except OSError as e:
                self.writes["failed"] += 1
                error = f"cannot write: {e.strerror or e}"
                if error != self._write_error:
                    log.error(
                        f"saved cluster state {self.path}: {error}", file=self.path, reason=error
                    )
                    self._write_error = error
                return False
            self._written, self._write_error = state, None
            self.writes["ok"] += 1
            self.last_write_seconds = time.perf_counter() - t0
            self.last_write_at = self.clock()
            self.last_write_bytes = len(data)
            return True


def write_atomically(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never a part, even after a power cut:
    a temporary file in the same folder, fsync, rename over, fsync the folder."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

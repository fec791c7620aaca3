"""The allocations state file on disk: read once at start, written atomically on change.

The codec is `appliance.plan.statefile` (pure); this is only the I/O around it. Nothing here
can stop the daemon: an unreadable or corrupt file is refused with one log line and the
daemon allocates afresh (as with no file); a failed write is logged and tried again at the
next change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import structlog

from appliance.model import Allocation
from appliance.plan.statefile import StateFileError, decode_allocations, encode_allocations

log = structlog.get_logger("appliance.daemon")

FILE_NAME = "allocations.json"


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

"""A folder of manifests as the cluster source, re-read when files change.

Polling with stat rather than inotify: it works the same on every filesystem (NFS,
overlay, a ConfigMap mount whose files are symlinks swapped atomically), costs one
stat per file, and a file is re-read only when its (mtime, ctime, size, inode)
changed. ctime is in it so that `chmod +r` on an unreadable file counts as a change.

File timestamps tick coarsely (a kernel jiffy), so two writes of the same size within
one tick look alike. Like git's "racily clean" index entries, a file read less than
RACY_NS after its mtime is read again on the next poll; re-reading an unchanged file
gives the same objects, so this costs a parse, never a spurious snapshot.

A bad edit never takes down what was working: when a file that was read before becomes
unreadable or stops being valid YAML, its last good objects stay in force; when one object
of a file becomes invalid, its last good version stays. Both are refusals that say so,
until the file is fixed or removed. (Removing a file or an object does remove it.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from appliance.cluster.manifests import KubeObject, build_state, parse_text
from appliance.model import ClusterState, EndpointSlice, Refusal

SUFFIXES = (".yaml", ".yml", ".json")
Stamp = tuple[int, int, int, int]  # mtime_ns, ctime_ns, size, inode
RACY_NS = 100_000_000  # well above the mtime tick of Linux filesystems (a jiffy)


@dataclass(frozen=True, slots=True)
class _File:
    stamp: Stamp
    objects: tuple[KubeObject, ...]
    refused: tuple[Refusal, ...]
    racy: bool = False  # read so soon after a write that the next one may keep the stamp


@dataclass(frozen=True, slots=True)
class _Scan:
    files: dict[str, Stamp]  # path relative to the folder -> stamp
    problems: tuple[Refusal, ...]  # the folder itself, unreadable subfolders


class FilesSource:
    """Services, EndpointSlices, Nodes and Ingresses from the YAML/JSON files of a folder.

    Recursive; hidden files and folders (editor swap files, a ConfigMap's `..data`)
    are skipped. Objects of unchanged files stay the same Python objects from one
    snapshot to the next, and so does a Service's slices tuple when none of its slices
    changed. Not thread-safe: one caller (usually `watch`) drives it."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._files: dict[str, _File] = {}
        self._problems: tuple[Refusal, ...] = ()
        self._state: ClusterState | None = None

    @property
    def state(self) -> ClusterState | None:
        """The last snapshot (None before the first load)."""
        return self._state

    def load(self) -> ClusterState:
        """Read every file afresh."""
        scan = self._scan()
        self._files = {path: self._read(path, stamp, None) for path, stamp in scan.files.items()}
        self._problems = scan.problems
        self._state = self._build()
        return self._state

    def poll(self) -> ClusterState | None:
        """The new snapshot if a file changed, appeared or vanished, else None.

        A change that yields the same objects (`touch`, a comment edited) is no change."""
        if self._state is None:
            return self.load()
        scan = self._scan()
        changed = [p for p, stamp in scan.files.items() if self._stale(p, stamp)]
        vanished = [p for p in self._files if p not in scan.files]
        if not changed and not vanished and scan.problems == self._problems:
            return None
        for path in vanished:
            del self._files[path]
        for path in changed:
            self._files[path] = self._read(path, scan.files[path], self._files.get(path))
        self._problems = scan.problems
        state = self._build()
        if _same_state(state, self._state):
            return None
        self._state = state
        return state

    async def watch(self, interval: float = 0.05) -> AsyncIterator[ClusterState]:
        """The first snapshot, then each changed one. Reading runs in a worker thread so
        a large folder never stalls the event loop."""
        yield await asyncio.to_thread(self.load)
        while True:
            await asyncio.sleep(interval)
            state = await asyncio.to_thread(self.poll)
            if state is not None:
                yield state

    # --- internals -------------------------------------------------------------------

    def _stale(self, path: str, stamp: Stamp) -> bool:
        known = self._files.get(path)
        return known is None or known.racy or known.stamp != stamp

    def _scan(self) -> _Scan:
        files: dict[str, Stamp] = {}
        problems: list[Refusal] = []
        root = str(self.folder)
        if not self.folder.is_dir():
            reason = "no such folder" if not self.folder.exists() else "not a folder"
            return _Scan({}, (Refusal("File", "", root, reason, root),))
        seen_dirs: set[tuple[int, int]] = set()
        pending = [""]
        while pending:
            relative = pending.pop()
            here = os.path.join(root, relative) if relative else root
            try:
                info = os.stat(here)
                if (info.st_dev, info.st_ino) in seen_dirs:  # a symlink loop
                    continue
                seen_dirs.add((info.st_dev, info.st_ino))
                entries = list(os.scandir(here))
            except OSError as e:
                name = relative or root
                problems.append(Refusal("File", "", name, _os_reason(e), name))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = f"{relative}/{entry.name}" if relative else entry.name
                try:
                    if entry.is_dir():
                        pending.append(path)
                        continue
                    if not entry.name.endswith(SUFFIXES):
                        continue
                    st = entry.stat()  # follows symlinks: a swapped target counts
                    if not stat.S_ISREG(st.st_mode):
                        continue  # a FIFO or a device would block the read
                except OSError as e:
                    # Vanished between listing and stat, or a dangling symlink.
                    if isinstance(e, FileNotFoundError):
                        continue
                    problems.append(Refusal("File", "", path, _os_reason(e), path))
                    continue
                files[path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        problems.sort(key=lambda r: r.name)
        return _Scan(dict(sorted(files.items())), tuple(problems))

    def _read(self, path: str, stamp: Stamp, before: _File | None) -> _File:
        racy = time.time_ns() - stamp[0] < RACY_NS
        try:
            data = (self.folder / path).read_bytes()
        except OSError as e:
            return _unusable(stamp, path, _os_reason(e), before)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return _unusable(stamp, path, f"not UTF-8 text (byte {e.start})", before)
        try:
            objects, refused = parse_text(text, path)
        except Exception as e:  # a bug in our parser must not stop the other files
            reason = f"could not be read ({type(e).__name__}: {e}); please report this"
            return _unusable(stamp, path, reason, before)
        if before is None:
            return _File(stamp, tuple(objects), tuple(refused), racy)
        if any(r.kind == "File" for r in refused):  # a YAML syntax error: the file is half read
            return _File(stamp, before.objects, tuple(_kept(refused)), racy)
        objects, refused = _keep_last_good(objects, refused, before.objects)
        return _File(stamp, tuple(_reuse(objects, before.objects)), tuple(refused), racy)

    def _build(self) -> ClusterState:
        files = [self._files[p] for p in sorted(self._files)]
        objects = [obj for file in files for obj in file.objects]
        refused = [*self._problems, *(r for file in files for r in file.refused)]
        return build_state(objects, refused, previous=self._state)


_KEPT = "; its last good version stays in force"


def _kept(refused: list[Refusal]) -> list[Refusal]:
    return [dataclasses.replace(r, reason=r.reason + _KEPT) for r in refused]


def _unusable(stamp: Stamp, path: str, reason: str, before: _File | None) -> _File:
    """A file that cannot be read at all: its last good objects, if any, stay."""
    if before is None or not before.objects:
        return _File(stamp, (), (Refusal("File", "", path, reason, path),))
    return _File(stamp, before.objects, (Refusal("File", "", path, reason + _KEPT, path),))


def _keep_last_good(
    objects: list[KubeObject], refused: list[Refusal], before: tuple[KubeObject, ...]
) -> tuple[list[KubeObject], list[Refusal]]:
    """A refused object that the file held before in a good version keeps that version."""
    good = {(type(o).__name__, getattr(o, "namespace", ""), o.name): o for o in before}
    kept: list[KubeObject] = []
    reasons: list[Refusal] = []
    for r in refused:
        old = good.get((r.kind, r.namespace, r.name)) if r.name else None
        if old is not None and not any(o is old for o in kept):
            kept.append(old)
            reasons.extend(_kept([r]))
        else:
            reasons.append(r)
    return [*objects, *kept], reasons


def _reuse(objects: list[KubeObject], before: tuple[KubeObject, ...]) -> list[KubeObject]:
    """The objects of a re-read file, with each one equal to its former self replaced by
    that very object: editing one Service in a file keeps the others' identity."""
    old: dict[tuple[type, str, str], KubeObject] = {}
    for obj in before:
        old[_identity(obj)] = obj
    result: list[KubeObject] = []
    for obj in objects:
        previous = old.get(_identity(obj))
        result.append(previous if previous is not None and previous == obj else obj)
    return result


def _identity(obj: KubeObject) -> tuple[type, str, str]:
    legacy = "legacy" if isinstance(obj, EndpointSlice) and obj.legacy else ""
    return (type(obj), getattr(obj, "namespace", "") + "/" + obj.name, legacy)


def _same_state(a: ClusterState, b: ClusterState | None) -> bool:
    if b is None or a.refused != b.refused:
        return False
    pairs = (
        (a.services, b.services),
        (a.endpoint_slices, b.endpoint_slices),
        (a.nodes, b.nodes),
        (a.ingresses, b.ingresses),
    )
    for new, old in pairs:
        if new.keys() != old.keys():
            return False
        if any(value is not old[key] for key, value in new.items()):
            return False
    return True


def _os_reason(e: OSError) -> str:
    return f"cannot read: {e.strerror or e}"

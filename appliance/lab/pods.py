"""The "pods" of a lab node: listeners on the endpoint addresses the manifests place on it.

A pod is an endpoint address of an EndpointSlice (ready or serving) whose nodeName is this
node; it listens on every port of the slices that list it. TCP answers one HTTP/1.1
response and closes, UDP answers each datagram; both say `<pod-name> <node-name>\\n`.
The model has no pod names (Endpoint has no targetRef), so `PodNames` reads them from the
raw YAML. SCTP ports are not served (the rules still send traffic there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from appliance.cluster.files import RACY_NS, SUFFIXES
from appliance.lab import httpd
from appliance.model import ClusterState

Port = tuple[str, int]  # ("tcp" | "udp" | "sctp", port)
Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    address: str
    ports: frozenset[Port]

    def port_list(self) -> str:
        return " ".join(f"{p}/{n}" for p, n in sorted(self.ports))


def local_pods(state: ClusterState, node: str, names: Mapping[str, str]) -> dict[str, Pod]:
    """address -> the pod this node runs there."""
    ports: dict[str, set[Port]] = {}
    for slices in state.endpoint_slices.values():
        for s in slices:
            if s.address_type == "FQDN":
                continue
            for e in s.endpoints:
                if e.node_name != node or not (e.ready or e.serving):
                    continue
                for address in e.addresses:
                    ports.setdefault(address, set()).update(
                        (p.protocol.lower(), p.port) for p in s.ports
                    )
    return {a: Pod(names.get(a, f"pod-{a}"), a, frozenset(p)) for a, p in sorted(ports.items())}


class PodNames:
    """Endpoint address -> targetRef.name, from the EndpointSlices and Endpoints of a
    manifests folder. Each file is parsed again only when it changed; one that does not
    parse keeps the names it gave before."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[Path, tuple[tuple[int, int, int, int], dict[str, str]]] = {}

    def read(self) -> dict[str, str]:
        names: dict[str, str] = {}
        seen: dict[Path, tuple[tuple[int, int, int, int], dict[str, str]]] = {}
        for path in _files(self.folder):
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
            known = self._files.get(path)
            racy = time.time_ns() - st.st_mtime_ns < RACY_NS  # may change within one tick
            if known is None or known[0] != stamp or racy:
                parsed = _parse(path)
                known = (stamp, parsed if parsed is not None else (known[1] if known else {}))
            seen[path] = known
            for address, name in known[1].items():
                names.setdefault(address, name)
        self._files = seen
        return names


def _parse(path: Path) -> dict[str, str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
        docs = list(yaml.load_all(text, Loader=Loader)) if "targetRef" in text else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    names: dict[str, str] = {}
    for obj in _objects(docs):
        for address, name in _refs(obj):
            names.setdefault(address, name)
    return names


def _files(folder: Path) -> Iterator[Path]:
    """The manifests FilesSource reads: recursive, hidden ones skipped, symlinks followed."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and f.endswith(SUFFIXES):
                yield Path(root) / f


def _objects(docs: list[Any]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from _objects(doc["items"])
        else:
            yield doc


def _refs(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if obj.get("kind") == "EndpointSlice":
        groups = [(e, e.get("addresses")) for e in _dicts(obj.get("endpoints"))]
    elif obj.get("kind") == "Endpoints":
        groups = [
            (a, [a.get("ip")])
            for subset in _dicts(obj.get("subsets"))
            for key in ("addresses", "notReadyAddresses")
            for a in _dicts(subset.get(key))
        ]
    else:
        return
    for holder, addresses in groups:
        ref = holder.get("targetRef")
        name = ref.get("name") if isinstance(ref, dict) else None
        if isinstance(name, str) and name and isinstance(addresses, list):
            for address in addresses:
                if isinstance(address, str):
                    yield address, name


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.reply, addr)


class Listeners:
    """The open sockets of the pods, one per (address, protocol, port)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._tcp: dict[tuple[str, int], asyncio.Server] = {}
        self._udp: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    def reply(self, pod: Pod) -> bytes:
        return f"{pod.name} {self.node}\n".encode()

    async def open(self, pod: Pod) -> list[str]:
        """Listen on every port of the pod; the failures, one line each."""
        failed: list[str] = []
        for proto, port in sorted(pod.ports):
            try:
                await self._open(pod, proto, port)
            except OSError as e:
                failed.append(f"{pod.address} {proto}/{port}: {e.strerror or e}")
        return failed

    async def _open(self, pod: Pod, proto: str, port: int) -> None:
        body = self.reply(pod)
        headers = [("Content-Type", "text/plain")]
        key = (pod.address, port)
        if proto == "tcp" and key not in self._tcp:
            self._tcp[key] = await httpd.listen(lambda _: (200, headers, body), pod.address, port)
        elif proto == "udp" and key not in self._udp:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: _Echo(body), local_addr=key)
            self._udp[key] = transport

    def close(self, address: str) -> None:
        """Close every socket of the pod at this address."""
        for key in [k for k in self._tcp if k[0] == address]:
            self._tcp.pop(key).close()
        for key in [k for k in self._udp if k[0] == address]:
            with contextlib.suppress(OSError):
                self._udp.pop(key).close()

    def close_all(self) -> None:
        for address in {k[0] for k in [*self._tcp, *self._udp]}:
            self.close(address)

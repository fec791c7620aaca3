"""A stand-in for kube-apiserver, which cannot run on the CI machine (no registry we can
reach ships its binary). It speaks the parts of the Kubernetes API the appliance uses,
the way the real server does, so the same client code runs against both (the contract
suite in tests/kube_contract/ runs the same scenarios against a real kube-apiserver):

- list: `{"kind": "ServiceList", "metadata": {"resourceVersion": "N"}, "items": [...]}`,
  items without kind/apiVersion, as the real server sends them;
- watch (`?watch=true`): newline-delimited JSON events after `resourceVersion`,
  ADDED/MODIFIED/DELETED, BOOKMARK events when `allowWatchBookmarks=true`, and a 200
  response carrying one ERROR event with a 410 Status (reason Expired) when the version
  is older than the last compaction; without a version, the current objects as ADDED;
- one resourceVersion counter for everything (etcd's revision), objects keep the
  version of their last write;
- the status subresource: a patch of `.../status` changes only `status`, a patch of the
  object ignores `status`; merge patches (RFC 7386);
- 409 Conflict for a create of an existing name and an update with a stale
  `metadata.resourceVersion`; 422 Invalid for objects the real validation refuses (the
  checks the appliance can trip over: names, Service ports and types, status ingress
  IPs and ipMode, Events' required fields);
- bearer tokens (401 without the right one), ServiceAccount TokenRequest, Secrets.

The API's rules (kinds, Status objects, merge patch, validation, RBAC, defaults) are in
fake_rules.py; this module is the server: storage, versions, watches, routes.

Faults for tests: `compact()` (later watches from older versions get 410), `delay`
(seconds before every response), `stop()`/`start()` on the same port with storage
kept (the API server restarts; etcd keeps the data), `drop_watches()`.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.fake_rules import (
    _BY_PATH,
    _MODIFIED,
    KINDS,
    Allocated,
    ApiError,
    Kind,
    Rule,
    default_service,
    forbidden,
    invalid,
    merge_patch,
    rbac_rules,
    status_object,
    validate,
)

__all__ = ["KINDS", "ApiError", "FakeApiServer", "Kind", "merge_patch", "status_object"]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Watcher:
    kind: Kind
    namespace: str | None
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = field(default_factory=asyncio.Queue)


class FakeApiServer:
    """`async with FakeApiServer() as api:` serves on 127.0.0.1 at `api.url`."""

    def __init__(
        self,
        token: str | None = "test-token",
        bookmark_interval: float = 1.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.tls = tls  # serve https with this context, as the real server always does
        self.minted: set[str] = set()  # tokens from TokenRequests, accepted too
        # With RBAC set, the `rbac_token` holder may do only what those rules allow:
        # (namespace or None for cluster-wide, apiGroups, resources, verbs) per rule.
        self.rbac: list[Rule] | None = None
        self.rbac_token = "appliance-sa"
        self.forbidden: list[str] = []  # what RBAC refused, for assertions
        self.bookmark_interval = bookmark_interval
        self.delay = 0.0
        self.ip_mode = True  # False: refuse status ingress ipMode, as a strict older server
        self.port = 0
        self.revision = 1
        self.compacted = 0
        self.store: dict[Kind, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self.history: list[tuple[int, Kind, str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self.on_request: Callable[[str, str], None] | None = None  # (method, path), benches
        self._watchers: list[_Watcher] = []
        self._runner: web.AppRunner | None = None
        self._counter = Allocated()  # cluster IPs and node ports handed out

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.tls
        )
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def drop_watches(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        self._watchers.clear()

    def compact(self) -> None:
        """Forget history up to now, as etcd compaction does: older versions get 410."""
        self.compacted = self.revision
        self.history.clear()

    # --- direct access for tests (no HTTP) -------------------------------------------------

    def kind(self, resource: str) -> Kind:
        return next(k for k in KINDS if k.resource == resource)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored object (edit it and `update` it, as a client would)."""
        return copy.deepcopy(self.store[self.kind(resource)].get((namespace, name)))

    def objects(self, resource: str) -> list[dict[str, Any]]:
        return list(self.store[self.kind(resource)].values())

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind = self.kind(resource)
        ns = obj.get("metadata", {}).get("namespace", "default") if kind.namespaced else ""
        return self._create(kind, ns, copy.deepcopy(obj))

    def delete(self, resource: str, namespace: str, name: str) -> None:
        self._delete(self.kind(resource), namespace, name)

    def update(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind = self.kind(resource)
        meta = obj["metadata"]
        return self._put(
            kind,
            meta.get("namespace", "") if kind.namespaced else "",
            meta["name"],
            copy.deepcopy(obj),
            False,
        )

    # --- HTTP ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.on_request is not None:
            self.on_request(request.method, request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.token is not None and bearer != self.token and bearer not in self.minted:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            kind, ns, name, sub = self._route(request.path)
            if self.rbac is not None and bearer == self.rbac_token:
                self._authorize(request, kind, ns, name, sub)
            body: Any = None
            if request.method in ("POST", "PUT", "PATCH"):
                try:
                    body = json.loads(await request.read())
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from e
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be an object")
            if request.method == "GET" and name is None:
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, kind, ns)
                return web.json_response(self._list(kind, ns))
            if request.method == "GET" and name is not None:
                return web.json_response(self._get(kind, ns or "", name))
            if request.method == "POST" and name is None:
                self._check_namespace(body, ns)
                return web.json_response(self._create(kind, ns or "", body), status=201)
            if request.method == "POST" and sub == "token" and kind.resource == "serviceaccounts":
                return web.json_response(
                    self._token_request(ns or "", name or "", body), status=201
                )
            if request.method == "PUT" and name is not None:
                return web.json_response(self._put(kind, ns or "", name, body, sub == "status"))
            if request.method == "PATCH" and name is not None:
                ctype = request.headers.get("Content-Type", "")
                if ctype not in (
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                ):
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format - accepted media types "
                        f"include: application/merge-patch+json, got {ctype}",
                    )
                return web.json_response(self._patch(kind, ns or "", name, body, sub == "status"))
            if request.method == "DELETE" and name is not None:
                return web.json_response(self._delete(kind, ns or "", name))
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported here")
        except ApiError as e:
            return e.response()

    def load_rbac(self, documents: list[dict[str, Any]]) -> None:
        """Enforce the rules of these ClusterRoles and Roles for `rbac_token`."""
        self.rbac = rbac_rules(documents)
        self.minted.add(self.rbac_token)

    def _authorize(
        self, request: web.Request, kind: Kind, ns: str | None, name: str | None, sub: str | None
    ) -> None:
        refused = forbidden(self.rbac or [], request, kind, ns, name, sub)
        if refused:
            self.forbidden.append(refused)
            raise ApiError(
                403,
                "Forbidden",
                f"system:serviceaccount:appliance-system:appliance cannot {refused}",
            )

    def _route(self, path: str) -> tuple[Kind, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        kind = _BY_PATH.get((group, version, rest[0]))
        if kind is None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        if not kind.namespaced and ns is not None:
            raise ApiError(404, "NotFound", f"{kind.resource} is not namespaced")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and kind.has_status) and sub != "token":
            raise ApiError(404, "NotFound", f"no subresource {sub} of {kind.resource}")
        if kind.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "a namespaced object needs its namespace in the path")
        return kind, ns, name, sub

    def _check_namespace(self, body: dict[str, Any], ns: str | None) -> None:
        meta = body.setdefault("metadata", {})
        if ns is not None and meta.get("namespace", ns) != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )

    def _list(self, kind: Kind, ns: str | None) -> dict[str, Any]:
        items = [
            _without_type(o)
            for (o_ns, _), o in sorted(self.store[kind].items())
            if ns is None or o_ns == ns
        ]
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    def _get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        obj = self.store[kind].get((ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{kind.resource} "{name}" not found')
        return obj

    async def _watch(self, request: web.Request, kind: Kind, ns: str | None) -> web.StreamResponse:
        rv_text = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)

        async def send(kind_of_event: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": kind_of_event, "object": obj}) + "\n"
            await resp.write(line.encode())

        watcher = _Watcher(kind, ns)
        try:
            if rv_text in ("", "0"):
                backlog = [
                    ("ADDED", o)
                    for (o_ns, _), o in sorted(self.store[kind].items())
                    if ns is None or o_ns == ns
                ]
            else:
                try:
                    rv = int(rv_text)
                except ValueError:
                    await send(
                        "ERROR",
                        status_object(400, "BadRequest", f"invalid resource version {rv_text!r}"),
                    )
                    return resp
                if rv < self.compacted:
                    await send(
                        "ERROR",
                        status_object(
                            410, "Expired", f"too old resource version: {rv} ({self.compacted})"
                        ),
                    )
                    return resp
                backlog = [
                    (t, o)
                    for r, k, t, o in self.history
                    if r > rv and k is kind and (ns is None or o["metadata"].get("namespace") == ns)
                ]
            self._watchers.append(watcher)
            for t, o in backlog:
                await send(t, o)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    return resp
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": kind.kind,
                                "apiVersion": kind.api_version,
                                "metadata": {"resourceVersion": str(self.revision)},
                            },
                        )
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if item is None:  # dropped: end the response without the terminating chunk
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                await send(*item)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def _emit(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        frozen = copy.deepcopy(obj)
        self.history.append((self.revision, kind, event, frozen))
        for w in self._watchers:
            if w.kind is kind and (
                w.namespace is None or w.namespace == obj["metadata"].get("namespace")
            ):
                w.queue.put_nowait((event, frozen))

    def _bump(self, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    def _create(self, kind: Kind, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns or meta.get("namespace") or "default"
            ns = meta["namespace"]
        if (ns, name) in self.store[kind]:
            raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists')
        if meta.get("resourceVersion"):
            raise ApiError(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if kind.kind == "Service":
            default_service(obj, self._counter)
        if kind.kind == "Service":  # a create never sets status (the real strategy resets it)
            obj["status"] = {"loadBalancer": {}}
        validate(kind, obj)
        self._bump(obj)
        self.store[kind][(ns, name)] = obj
        self._emit(kind, "ADDED", obj)
        return obj

    def _put(
        self, kind: Kind, ns: str, name: str, obj: dict[str, Any], status: bool
    ) -> dict[str, Any]:
        old = self._get(kind, ns, name)
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or meta.get("name", name) != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        sent_rv = meta.get("resourceVersion")
        if not sent_rv:
            raise ApiError(
                422,
                "Invalid",
                f'{kind.kind} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                "must be specified for an update",
            )
        if sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": {_MODIFIED}',
            )
        return self._replace(kind, ns, name, old, obj, status)

    def _patch(
        self, kind: Kind, ns: str, name: str, patch: dict[str, Any], status: bool
    ) -> dict[str, Any]:
        old = self._get(kind, ns, name)
        sent_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if sent_rv is not None and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": {_MODIFIED}',
            )
        return self._replace(kind, ns, name, old, merge_patch(old, patch), status)

    def _replace(
        self, kind: Kind, ns: str, name: str, old: dict[str, Any], new: dict[str, Any], status: bool
    ) -> dict[str, Any]:
        result = copy.deepcopy(old)
        if status:
            if "status" in new:  # the status subresource changes status only
                result["status"] = new["status"]
        else:
            for key, value in new.items():
                if key in ("status", "kind", "apiVersion"):
                    continue
                if key == "metadata":
                    keep = {
                        k: old["metadata"][k]
                        for k in (
                            "uid",
                            "creationTimestamp",
                            "namespace",
                            "name",
                            "resourceVersion",
                        )
                        if k in old["metadata"]
                    }
                    result["metadata"] = {**value, **keep}
                else:
                    result[key] = value
            if not kind.has_status and "status" in new:
                result["status"] = new["status"]
        if kind.kind == "Service":
            for port in (result.get("spec") or {}).get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
        validate(kind, result)
        if not self.ip_mode and kind.kind == "Service" and "ipMode" in json.dumps(result):
            raise invalid(
                kind, name, [".status.loadBalancer.ingress[0].ipMode: field not declared in schema"]
            )
        if result == old:
            return old  # a no-op write keeps the version and sends no event, like the real one
        self._bump(result)
        self.store[kind][(ns, name)] = result
        self._emit(kind, "MODIFIED", result)
        return result

    def _delete(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        old = self._get(kind, ns, name)
        del self.store[kind][(ns, name)]
        gone = copy.deepcopy(old)
        self._bump(gone)
        self._emit(kind, "DELETED", gone)
        return gone

    def _token_request(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._get(self.kind("serviceaccounts"), ns, name)
        seconds = int((body.get("spec") or {}).get("expirationSeconds") or 3600)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        token = f"minted-{ns}-{name}-{uuid.uuid4().hex}"
        self.minted.add(token)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns},
            "spec": body.get("spec") or {},
            "status": {
                "token": token,
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }


def _without_type(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

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

Faults for tests: `compact()` (later watches from older versions get 410), `delay`
(seconds before every response), `stop()`/`start()` on the same port with storage
kept (the API server restarts; etcd keeps the data), `drop_watches()`.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Kind:
    group: str  # "" = core
    version: str
    resource: str  # plural, as in the URL
    kind: str
    namespaced: bool = True
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = (
    Kind("", "v1", "services", "Service", has_status=True),
    Kind("", "v1", "nodes", "Node", namespaced=False, has_status=True),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "serviceaccounts", "ServiceAccount"),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, has_status=True),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Kind("networking.k8s.io", "v1", "ingresses", "Ingress", has_status=True),
    Kind("events.k8s.io", "v1", "events", "Event"),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
)
_BY_PATH = {(k.group, k.version, k.resource): k for k in KINDS}
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def response(self) -> web.Response:
        return web.json_response(
            status_object(self.code, self.reason, self.message), status=self.code
        )


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Watcher:
    kind: Kind
    namespace: str | None
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = field(default_factory=asyncio.Queue)


class FakeApiServer:
    """`async with FakeApiServer() as api:` serves on 127.0.0.1 at `api.url`."""

    def __init__(self, token: str | None = "test-token", bookmark_interval: float = 1.0) -> None:
        self.token = token
        self.minted: set[str] = set()  # tokens from TokenRequests, accepted too
        # With RBAC set, the `rbac_token` holder may do only what those rules allow:
        # (namespace or None for cluster-wide, apiGroups, resources, verbs) per rule.
        self.rbac: list[tuple[str | None, set[str], set[str], set[str]]] | None = None
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
        self._next_node_port = 30000
        self._next_cluster_ip = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
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
        """The rules of the ClusterRoles and Roles bound to a ServiceAccount (all of them,
        as deploy/rbac.yaml binds them), enforced for `rbac_token`."""
        rules: list[tuple[str | None, set[str], set[str], set[str]]] = []
        for doc in documents:
            if doc.get("kind") not in ("ClusterRole", "Role"):
                continue
            ns = doc["metadata"].get("namespace") if doc["kind"] == "Role" else None
            for r in doc.get("rules") or []:
                rules.append((ns, set(r["apiGroups"]), set(r["resources"]), set(r["verbs"])))
        self.rbac = rules
        self.rbac_token = "appliance-sa"
        self.minted.add(self.rbac_token)

    def _authorize(
        self, request: web.Request, kind: Kind, ns: str | None, name: str | None, sub: str | None
    ) -> None:
        method = request.method
        if method == "GET":
            verb = "get" if name else ("watch" if request.query.get("watch") else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        resource = f"{kind.resource}/{sub}" if sub else kind.resource
        for rule_ns, groups, resources, verbs in self.rbac or []:
            if rule_ns is not None and rule_ns != ns:
                continue
            if kind.group in groups and resource in resources and verb in verbs:
                return
        what = f"{verb} {resource} ({kind.group or 'core'}) in {ns or 'all namespaces'}"
        self.forbidden.append(what)
        raise ApiError(
            403, "Forbidden", f"system:serviceaccount:appliance-system:appliance cannot {what}"
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
            self._default_service(obj)
        if kind.kind == "Service":  # a create never sets status (the real strategy resets it)
            obj["status"] = {"loadBalancer": {}}
        _validate(kind, obj)
        self._bump(obj)
        self.store[kind][(ns, name)] = obj
        self._emit(kind, "ADDED", obj)
        return obj

    def _default_service(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if spec.get("clusterIP") != "None":
                n = self._next_cluster_ip
                self._next_cluster_ip += 1
                spec["clusterIP"] = f"198.19.{n // 250}.{n % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and "nodePort" not in port:
                    port["nodePort"] = self._next_node_port
                    self._next_node_port += 1
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))

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
        _validate(kind, result)
        if not self.ip_mode and kind.kind == "Service" and "ipMode" in json.dumps(result):
            raise _invalid(
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


def _invalid(kind: Kind, name: str, causes: list[str]) -> ApiError:
    return ApiError(422, "Invalid", f'{kind.kind} "{name}" is invalid: ' + ", ".join(causes))


def _validate(kind: Kind, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    name = meta.get("name")
    causes: list[str] = []
    if not isinstance(name, str) or not name:
        causes.append("metadata.name: Required value: name or generateName is required")
        raise _invalid(kind, "", causes)
    pattern = _DNS1035_LABEL if kind.kind == "Service" else _DNS1123_SUBDOMAIN
    if not pattern.fullmatch(name) or len(name) > (63 if kind.kind == "Service" else 253):
        causes.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 name")
    if kind.kind == "Service":
        causes += _service_problems(obj)
    elif kind.kind == "Event":
        for required in (
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ):
            if not obj.get(required):
                causes.append(f"{required}: Required value")
        if obj.get("type") not in ("Normal", "Warning"):
            causes.append(
                f"type: Unsupported value: {obj.get('type')!r}: "
                'supported values: "Normal", "Warning"'
            )
        if len(obj.get("note") or "") > 1024:
            causes.append("note: Too long: may not be more than 1024 bytes")
        regarding = obj.get("regarding") or {}
        if regarding.get("namespace") not in (None, meta.get("namespace")):
            causes.append("regarding.namespace: Invalid value: does not match event.namespace")
    elif kind.kind == "Lease":
        spec = obj.get("spec") or {}
        seconds = spec.get("leaseDurationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or seconds <= 0):
            causes.append("spec.leaseDurationSeconds: Invalid value: must be greater than 0")
    if causes:
        raise _invalid(kind, name, causes)


def _service_problems(obj: dict[str, Any]) -> list[str]:
    causes: list[str] = []
    spec = obj.get("spec") or {}
    stype = spec.get("type")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(f"spec.type: Unsupported value: {stype!r}")
    ports = spec.get("ports") or []
    if stype != "ExternalName" and not ports:
        causes.append("spec.ports: Required value")
    for i, port in enumerate(ports):
        p = port.get("port") if isinstance(port, dict) else None
        if not isinstance(p, int) or not 1 <= p <= 65535:
            causes.append(
                f"spec.ports[{i}].port: Invalid value: {p!r}: "
                "must be between 1 and 65535, inclusive"
            )
        if isinstance(port, dict) and port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            causes.append(f"spec.ports[{i}].protocol: Unsupported value: {port.get('protocol')!r}")
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for i, entry in enumerate(ingress):
        ip = entry.get("ip") if isinstance(entry, dict) else None
        if ip is not None:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ip: Invalid value: {ip!r}: "
                    "must be a valid IP address"
                )
        mode = entry.get("ipMode") if isinstance(entry, dict) else None
        if mode is not None:
            if mode not in ("VIP", "Proxy"):
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ipMode: Unsupported value: {mode!r}: "
                    'supported values: "Proxy", "VIP"'
                )
            elif ip is None:
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ipMode: Forbidden: "
                    "may not be specified when `ip` is not set"
                )
    return causes

"""A small Kubernetes API client on aiohttp: requests, watches, and where to connect.

Why not kubernetes_asyncio, the usual asyncio client: its typed models are the wrong
shape for us. `appliance.cluster.manifests` converts the JSON the API returns (camelCase
dicts, as `kubectl get -o json` prints them), and the same converter must serve the
files source; the typed client would turn every object into a snake_case model we would
serialise back to a dict, at thousands of objects per relist. Its Watch deserialises a
BOOKMARK's bare `metadata` into the full model (EndpointSlice requires addressType and
endpoints, so client-side validation fails on it). What is left for a client is a few
plain requests (merge-patch a status, create an Event, get/update a Lease), which do
not need it either. One transport, one place for TLS, tokens and timeouts.

Connections come from a kubeconfig (token, token file or client certificate; CA file
or data; the current context), from inside a pod (`in-cluster`), or from the config's
`api_server` + `token_file` + `ca_file`. Exec and auth-provider plugins are not run:
`appliance kubeconfig` mints a token kubeconfig for LB hosts instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from appliance.address import host_port
from appliance.config import ClusterConfig

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # seconds; bound ServiceAccount tokens are rotated by the kubelet
JsonObject = dict[str, Any]


class KubeConfigError(Exception):
    """The connection settings are unusable; the message is one line for the operator."""


class ApiError(Exception):
    """A request failed. `code` is the HTTP status (0: no answer: refused, reset,
    timed out), `reason` the Status reason (`Expired`, `Conflict`, `Invalid` ...)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if code else message)
        self.code, self.reason, self.message = code, reason, message

    @property
    def gone(self) -> bool:
        return self.code == 410


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach the API server."""

    server: str
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: str | None = None  # PEM text
    key_data: str | None = None
    insecure: bool = False
    namespace: str = "default"  # the context's (or the pod's) namespace

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https:"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_data and self.key_data:
            with tempfile.TemporaryDirectory() as tmp:  # ssl loads a chain from files only
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_text(self.cert_data)
                key.write_text(self.key_data)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


def connection_from_config(cluster: ClusterConfig) -> Connection:
    """The connection the config asks for: a kubeconfig file, `in-cluster`, or
    api_server + token_file (+ ca_file)."""
    if cluster.api_server:
        if not cluster.token_file:
            raise KubeConfigError("cluster.api_server needs cluster.token_file")
        return Connection(
            server=cluster.api_server.rstrip("/"),
            token_file=cluster.token_file,
            ca_file=cluster.ca_file,
        )
    if cluster.kubeconfig == "in-cluster":
        return in_cluster()
    if cluster.kubeconfig:
        return from_kubeconfig(cluster.kubeconfig)
    raise KubeConfigError("the config reads manifests, not the Kubernetes API")


def in_cluster(env: Mapping[str, str] | None = None, where: Path = IN_CLUSTER_DIR) -> Connection:
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "in-cluster: KUBERNETES_SERVICE_HOST/PORT are not set (not running in a pod?)"
        )
    token = where / "token"
    if not token.is_file():
        raise KubeConfigError(f"in-cluster: no service account token at {token}")
    ns_file = where / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    return Connection(
        server=f"https://{host_port(host, port)}",
        token_file=str(token),
        ca_file=str(where / "ca.crt"),
        namespace=namespace,
    )


def _named(entries: object, name: str, what: str, path: str) -> Mapping[str, Any]:
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                body = entry.get(what)
                if isinstance(body, Mapping):
                    return body
                return {}
    raise KubeConfigError(f"{path}: no {what} named {name!r}")


def _pem(data: object, path: str, key: str) -> str:
    try:
        return base64.b64decode(str(data), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise KubeConfigError(f"{path}: {key} is not base64 PEM ({e})") from e


def from_kubeconfig(path: str, context: str | None = None) -> Connection:
    """A kubeconfig's current (or named) context. Relative file paths in it are relative
    to the kubeconfig, as kubectl reads them."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise KubeConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise KubeConfigError(f"{path}: not YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, Mapping):
        raise KubeConfigError(f"{path}: not a kubeconfig (expected a mapping)")
    name = context or data.get("current-context")
    if not isinstance(name, str) or not name:
        raise KubeConfigError(f"{path}: no current-context")
    ctx = _named(data.get("contexts"), name, "context", path)
    cluster = _named(data.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = _named(data.get("users"), str(ctx.get("user")), "user", path) if ctx.get("user") else {}
    base = Path(path).resolve().parent

    def file(key: str, where: Mapping[str, Any]) -> str | None:
        value = where.get(key)
        return str(base / str(value)) if value else None

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no https:// server")
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(
            f"{path}: user {ctx.get('user')!r} needs a credential plugin, which the appliance "
            "does not run; mint a token kubeconfig with `appliance kubeconfig`"
        )
    ca_data = cluster.get("certificate-authority-data")
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    return Connection(
        server=server.rstrip("/"),
        token=str(user["token"]) if user.get("token") else None,
        token_file=file("tokenFile", user),
        ca_file=file("certificate-authority", cluster),
        ca_data=_pem(ca_data, path, "certificate-authority-data") if ca_data else None,
        cert_file=file("client-certificate", user),
        key_file=file("client-key", user),
        cert_data=_pem(cert_data, path, "client-certificate-data") if cert_data else None,
        key_data=_pem(key_data, path, "client-key-data") if key_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        namespace=str(ctx.get("namespace") or "default"),
    )


@dataclass
class _Token:
    file: str | None
    value: str | None
    read_at: float = field(default=0.0)

    def current(self) -> str | None:
        if self.file and time.monotonic() - self.read_at > TOKEN_REREAD:
            try:
                self.value = Path(self.file).read_text().strip()
                self.read_at = time.monotonic()
            except OSError as e:
                raise ApiError(0, "", f"cannot read token file {self.file}: {e}") from e
        return self.value


class KubeApi:
    """`async with KubeApi(connection) as api:`; requests return the decoded JSON or
    raise ApiError. Safe to share between tasks of one event loop."""

    def __init__(
        self,
        connection: Connection,
        request_timeout: float = 30.0,
        watch_idle_timeout: float = 90.0,
        max_connections: int = 32,
    ) -> None:
        self.connection = connection
        self.request_timeout = request_timeout
        # Bookmarks arrive about every minute; silence longer than this is a dead stream.
        self.watch_idle_timeout = watch_idle_timeout
        self._max_connections = max_connections
        self._token = _Token(connection.token_file, connection.token)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._streams: set[aiohttp.ClientResponse] = set()

    async def __aenter__(self) -> KubeApi:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            # A task that outlived its client (shutdown order) fails like a lost server.
            raise ApiError(0, "", "the API client is closed")
        if self._session is None:
            try:
                ctx = self.connection.ssl_context()
            except (OSError, ssl.SSLError) as e:
                raise KubeConfigError(f"TLS settings for {self.connection.server}: {e}") from e
            connector = aiohttp.TCPConnector(ssl=ctx, limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        self._closed = True
        for stream in list(self._streams):  # closing the session leaves open watches hanging
            stream.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "appliance"}
        token = self._token.current()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        session = self._open()
        data = json.dumps(body).encode() if body is not None else None
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with session.request(
                method,
                self.connection.server + path,
                data=data,
                params=params,
                headers=self._headers(content_type if data is not None else None),
                timeout=timeout,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as e:
            # RuntimeError: the session was closed under a request in flight.
            raise ApiError(0, "", f"{method} {path}: {_describe(e)}") from e
        decoded = _decode(raw)
        if status >= 400:
            raise _error(status, decoded, raw)
        if not isinstance(decoded, dict):
            raise ApiError(status, "", f"{method} {path}: the answer is not a JSON object")
        return decoded

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[JsonObject]:
        """The events of one watch request, as sent. An ERROR event is raised as ApiError
        (410 Expired among them); the iterator ends when the server ends the stream."""
        session = self._open()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.request_timeout, sock_read=self.watch_idle_timeout
        )
        query = {**params, "watch": "true"}
        try:
            async with session.get(
                self.connection.server + path,
                params=query,
                headers=self._headers(),
                timeout=timeout,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise _error(resp.status, _decode(raw), raw)
                self._streams.add(resp)
                while True:
                    line = await resp.content.readline()
                    if not line:
                        if self._closed:
                            raise ApiError(0, "", "the API client is closed")
                        return
                    if not line.strip():
                        continue
                    event = _decode(line)
                    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                        raise ApiError(0, "", f"watch {path}: a line that is not an event")
                    if event.get("type") == "ERROR":
                        raise _error(int(event["object"].get("code") or 500), event["object"], line)
                    yield event
        except (
            aiohttp.ClientError,
            TimeoutError,
            OSError,
            RuntimeError,
            asyncio.IncompleteReadError,
        ) as e:
            raise ApiError(0, "", f"watch {path}: {_describe(e)}") from e
        finally:
            self._streams = {r for r in self._streams if not r.closed}


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error(status: int, decoded: Any, raw: bytes) -> ApiError:
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return ApiError(
            int(decoded.get("code") or status),
            str(decoded.get("reason") or ""),
            str(decoded.get("message") or ""),
        )
    text = raw[:200].decode(errors="replace").strip()
    return ApiError(status, "", text or f"HTTP {status}")


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__

"""kube-proxy's health endpoints on a lab node, answering as kube-proxy's healthcheck
package does (pkg/proxy/healthcheck: proxy_health.go, service_health.go).

- `:10256/healthz` and `/livez`: JSON `{"lastUpdated", "currentTime", "nodeEligible"
  (healthz only), "healthy", "status": {family: {"lastUpdated", "healthy"}}}`. `/healthz`
  is 200 when the proxier is healthy and the node is eligible, else 503; `/livez` ignores
  eligibility. Any other path is 404.
- every healthCheckNodePort of a Local Service: any path, 200 when this node has ready
  endpoints of the Service and the proxier is healthy, else 503; the JSON names the Service
  and counts `localEndpoints`, which `X-Load-Balancing-Endpoint-Weight` repeats.

"Healthy" here means the last reconcile was applied (kube-proxy: no update pending longer
than its health timeout). A node is not eligible while it is being deleted (kube-proxy:
deletionTimestamp set, or the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint):
the lab's node agent toggles that on SIGUSR1. As in kube-proxy it turns `/healthz` to 503
with `"nodeEligible": false` and leaves `/livez` and the healthCheckNodePorts alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from appliance.lab import httpd
from appliance.lab.kubeproxy import HealthPort
from appliance.model import Family

HEALTHZ_PORT = 10256
JSON_HEADERS = (("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"))


def go_time(t: datetime) -> str:
    """A time as Go's encoding/json writes time.Time (RFC 3339, trailing zeros trimmed)."""
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


class ProxyHealth:
    """The proxier's health and the node's eligibility, and the :10256 handler."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = tuple(families)
        self.healthy = True
        self.node_eligible = True
        self.last_updated = datetime.now(UTC)

    def updated(self) -> None:
        self.healthy = True
        self.last_updated = datetime.now(UTC)

    def failed(self) -> None:
        self.healthy = False

    def handle(self, head: bytes) -> httpd.Reply:
        path = httpd.request_path(head)
        if path not in ("/healthz", "/livez"):
            return 404, (("Content-Type", "text/plain; charset=utf-8"),), b"404 page not found\n"
        now = datetime.now(UTC)
        ok = self.healthy and (self.node_eligible or path == "/livez")
        last = go_time(now if ok else self.last_updated)
        doc: dict[str, object] = {"lastUpdated": last, "currentTime": go_time(now)}
        if path == "/healthz":
            doc["nodeEligible"] = self.node_eligible
        doc["healthy"] = self.healthy
        doc["status"] = {
            f: {"lastUpdated": go_time(self.last_updated), "healthy": self.healthy}
            for f in self.families
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        return (200 if ok else 503), JSON_HEADERS, body


def service_reply(hp: HealthPort, proxy_healthy: bool) -> httpd.Reply:
    namespace, _, name = hp.service.partition("/")
    n = hp.local_endpoints
    body = (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": {json.dumps(namespace)},\n'
        f'\t\t"name": {json.dumps(name)}\n'
        "\t},\n"
        f'\t"localEndpoints": {n},\n'
        f'\t"serviceProxyHealthy": {json.dumps(proxy_healthy)}\n'
        "}"
    )
    headers = (*JSON_HEADERS, ("X-Load-Balancing-Endpoint-Weight", str(n)))
    return (200 if n and proxy_healthy else 503), headers, body.encode()


class ServiceHealth:
    """One HTTP server per healthCheckNodePort, on every address of both families."""

    def __init__(self, proxy: ProxyHealth) -> None:
        self.proxy = proxy
        self.ports: dict[int, HealthPort] = {}
        self._servers: dict[int, asyncio.Server] = {}

    async def sync(self, wanted: Mapping[int, HealthPort]) -> list[str]:
        """Open, update and close servers to match; one log line per change."""
        lines: list[str] = []
        for port in [p for p in self._servers if p not in wanted]:
            self._servers.pop(port).close()
            lines.append(f"healthcheck :{port} {self.ports.pop(port).service} closed")
        for port, hp in sorted(wanted.items()):
            before = self.ports.get(port)
            self.ports[port] = hp
            if port not in self._servers:
                try:
                    self._servers[port] = await httpd.listen(self._handler(port), None, port)
                except OSError as e:
                    del self.ports[port]
                    lines.append(f"healthcheck :{port} {hp.service}: {e.strerror or e}")
                    continue
            if before != hp:
                lines.append(
                    f"healthcheck :{port} {hp.service} localEndpoints {hp.local_endpoints}"
                )
        return lines

    def _handler(self, port: int) -> httpd.Handler:
        def handle(_: bytes) -> httpd.Reply:
            hp = self.ports.get(port)
            if hp is None:  # closed while this connection waited
                return 503, JSON_HEADERS, b""
            return service_reply(hp, self.proxy.healthy)

        return handle

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        self.ports.clear()

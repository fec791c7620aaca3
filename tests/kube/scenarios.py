"""Scenarios that hold for kube-apiserver and for its stand-in alike, spoken over HTTP
only. tests/kube/ runs them against the stand-in (tests/support/fake_apiserver.py),
tests/kube_contract/ against a real kube-apiserver + etcd, so the stand-in cannot drift
from what the real server does without one of the two suites saying so.

Each scenario takes a `Raw` (plain aiohttp, independent of the appliance's client) and
a fresh namespace name it may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from appliance.cluster.kube import KubeSource
from appliance.config import ClusterConfig, Config, Pool
from appliance.kube.api import ApiError, Connection, KubeApi
from appliance.kube.status import StatusWriter
from appliance.plan import Planner
from tests.kube.objects import service

MERGE = "application/merge-patch+json"


class Raw:
    def __init__(self, url: str, token: str | None, insecure: bool = True) -> None:
        self.url, self.token = url, token
        ctx: ssl.SSLContext | bool = False
        if url.startswith("https:"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))

    def connection(self) -> Connection:
        return Connection(self.url, token=self.token, insecure=True)

    async def close(self) -> None:
        await self.session.close()

    def headers(self, ctype: str = "application/json") -> dict[str, str]:
        h = {"Content-Type": ctype}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.url + path, data=data, headers=self.headers(ctype)
        ) as r:
            return r.status, await r.json(content_type=None)

    async def watch(
        self, path: str, params: dict[str, str], until: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with self.session.get(
            self.url + path, params={**params, "watch": "true"}, headers=self.headers()
        ) as r:
            assert r.status == 200, await r.text()
            while not until(events):
                line = await asyncio.wait_for(r.content.readline(), 30)
                if not line:
                    break
                events.append(json.loads(line))
        return events


async def ensure_namespace(raw: Raw, ns: str) -> None:
    status, body = await raw.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )
    assert status in (201, 409), body


def svc_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services" + (f"/{name}" if name else "")


# --- the scenarios -------------------------------------------------------------------------


async def list_then_watch(raw: Raw, ns: str) -> None:
    """A list carries a resourceVersion and items without kind; a watch from it sees
    every later change in order, with growing versions, and the objects' own kinds."""
    await ensure_namespace(raw, ns)
    status, _ = await raw.call("POST", svc_path(ns), service("a", ns))
    assert status == 201
    status, listed = await raw.call("GET", svc_path(ns))
    assert status == 200 and listed["kind"] == "ServiceList"
    version = listed["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    assert "kind" not in listed["items"][0]

    async def writes() -> None:
        await asyncio.sleep(0.2)
        await raw.call("POST", svc_path(ns), service("b", ns))
        await raw.call("PATCH", svc_path(ns, "a"), {"metadata": {"labels": {"x": "y"}}}, MERGE)
        await raw.call("DELETE", svc_path(ns, "b"))

    task = asyncio.create_task(writes())
    events = await raw.watch(svc_path(ns), {"resourceVersion": version}, lambda e: len(e) >= 3)
    await task
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(version)
    assert events[0]["object"]["kind"] == "Service"


async def status_subresource(raw: Raw, ns: str) -> None:
    """A patch of /status changes status only; a patch of the object ignores status."""
    await ensure_namespace(raw, ns)
    status, created = await raw.call("POST", svc_path(ns), service("s", ns))
    assert status == 201
    assert created["status"] == {"loadBalancer": {}}
    patch = {
        "spec": {"ports": [{"name": "p81", "port": 81, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.1"}]}},
    }
    status, after = await raw.call("PATCH", svc_path(ns, "s") + "/status", patch, MERGE)
    assert status == 200, after
    assert after["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.18.100.1"
    assert [p["port"] for p in after["spec"]["ports"]] == [80]
    patch = {
        "spec": {"ports": [{"name": "p82", "port": 82, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.2"}]}},
    }
    status, after = await raw.call("PATCH", svc_path(ns, "s"), patch, MERGE)
    assert status == 200, after
    assert [p["port"] for p in after["spec"]["ports"]] == [82]
    assert after["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.18.100.1"
    status, after = await raw.call(
        "PATCH",
        svc_path(ns, "s") + "/status",
        {"status": {"loadBalancer": {"ingress": None}}},
        MERGE,
    )
    assert status == 200 and "ingress" not in after["status"]["loadBalancer"]


async def conflicts_and_invalid(raw: Raw, ns: str) -> None:
    """409 for a second create and for an update from a stale version; 422 for a Service
    the validation refuses and for a status with a bad ingress IP."""
    await ensure_namespace(raw, ns)
    status, created = await raw.call("POST", svc_path(ns), service("c", ns))
    assert status == 201
    status, body = await raw.call("POST", svc_path(ns), service("c", ns))
    assert (status, body["reason"], body["code"]) == (409, "AlreadyExists", 409)
    stale = json.loads(json.dumps(created))
    status, _ = await raw.call(
        "PATCH", svc_path(ns, "c"), {"metadata": {"labels": {"a": "b"}}}, MERGE
    )
    assert status == 200
    status, body = await raw.call("PUT", svc_path(ns, "c"), stale)
    assert (status, body["reason"]) == (409, "Conflict")
    bad = service("d", ns)
    bad["spec"]["ports"][0]["port"] = 0
    status, body = await raw.call("POST", svc_path(ns), bad)
    assert (status, body["reason"]) == (422, "Invalid")
    assert "spec.ports[0].port" in body["message"]
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}}
    status, body = await raw.call("PATCH", svc_path(ns, "c") + "/status", patch, MERGE)
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = await raw.call("GET", svc_path(ns, "nope"))
    assert (status, body["reason"]) == (404, "NotFound")


async def create_to_status(raw: Raw, ns: str) -> None:
    """The appliance end to end: its source sees a new LoadBalancer Service, the planner
    allocates, the writer patches status; another controller's Service is left alone."""
    await ensure_namespace(raw, ns)
    # A class of this run's own: other scenarios' LoadBalancers on a shared server are
    # not ours, so the first address of the pool is this Service's.
    lb_class = f"appliance.io/{ns}"
    config = Config(
        pools=(Pool("p", (parse_range("198.18.100.0", "198.18.100.15"),)),),
        cluster=ClusterConfig(kubeconfig="x", load_balancer_class=lb_class),
    )
    async with KubeApi(raw.connection()) as api:
        source = KubeSource(api)
        planner = Planner(config)
        writer = StatusWriter(api, config)

        async def loop() -> None:
            async for state in source.watch():
                await writer.sync(state, planner.plan(state))

        task = asyncio.create_task(loop())
        try:
            await raw.call("POST", svc_path(ns), service("lb", ns, load_balancer_class=lb_class))
            other = service("theirs", ns, load_balancer_class="example.com/other")
            await raw.call("POST", svc_path(ns), other)
            for _ in range(200):
                _, got = await raw.call("GET", svc_path(ns, "lb"))
                if got["status"].get("loadBalancer", {}).get("ingress"):
                    break
                await asyncio.sleep(0.05)
            ingress = got["status"]["loadBalancer"]["ingress"]
            assert [i["ip"] for i in ingress] == ["198.18.100.0"]
            _status, theirs = await raw.call("GET", svc_path(ns, "theirs"))
            assert not theirs["status"].get("loadBalancer", {}).get("ingress")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await task


def parse_range(first: str, last: str) -> Any:
    import ipaddress

    return (ipaddress.ip_address(first), ipaddress.ip_address(last))


SCENARIOS: dict[str, Callable[[Raw, str], Coroutine[Any, Any, None]]] = {
    "list_then_watch": list_then_watch,
    "status_subresource": status_subresource,
    "conflicts_and_invalid": conflicts_and_invalid,
    "create_to_status": create_to_status,
}

"""deploy/rbac.yaml is enough, and not more than needed: the stand-in enforces its rules
for the appliance's token while the appliance runs a full cycle."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
from pathlib import Path
from typing import Any

import yaml

from appliance.config import ClusterConfig, Config, Pool
from appliance.kube.api import Connection, KubeApi
from appliance.kube.link import KubeLink
from appliance.plan import Planner
from tests.kube.objects import endpoint_slice, ingress, node, service
from tests.support.fake_apiserver import FakeApiServer

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
POOL = Pool("p", ((ipaddress.ip_address("198.18.100.0"), ipaddress.ip_address("198.18.100.9")),))
CONFIG = Config(pools=(POOL,), cluster=ClusterConfig(kubeconfig="in-cluster"))


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


async def cycle(docs: list[dict[str, Any]]) -> tuple[FakeApiServer, dict[str, Any] | None]:
    async with FakeApiServer() as fake:
        fake.load_rbac(docs)
        fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
        fake.create("nodes", node("n1", "198.18.0.11"))
        fake.create("services", service("web"))
        fake.create("endpointslices", endpoint_slice("web", ("198.18.1.1",)))
        fake.create("ingresses", ingress("site", "www.example.test"))
        link = KubeLink(KubeApi(Connection(fake.url, token=fake.rbac_token)), CONFIG, "lb-1")
        async with link:
            planner = Planner(CONFIG)
            states = link.states()
            state = await anext(states)
            for _ in range(100):
                if link.elector.is_leader():
                    break
                await asyncio.sleep(0.02)
            await link.elector.try_acquire()  # a renewal: get + update
            await link.publish(state, planner.plan(state))
            with contextlib.suppress(asyncio.CancelledError):
                await states.aclose()
        return fake, fake.get("services", "default", "web")


def test_the_appliance_needs_nothing_more() -> None:
    fake, web = asyncio.run(asyncio.wait_for(cycle(documents()), 20))
    assert fake.forbidden == []
    assert web is not None and web["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.18.100.0"
    assert [e["reason"] for e in fake.objects("events")] == ["IPAllocated"]
    verbs = {(m, p.rsplit("/", 1)[-1]) for m, p in fake.requests}
    assert ("PUT", "appliance-status-writer") in verbs  # the renewal went through RBAC too


def test_without_the_status_rule_the_write_is_forbidden() -> None:
    docs = copy.deepcopy(documents())
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["services/status"]]
    fake, web = asyncio.run(asyncio.wait_for(cycle(docs), 20))
    assert fake.forbidden == ["patch services/status (core) in default"]
    assert web is not None and not web["status"]["loadBalancer"]


def test_the_role_grants_only_what_the_code_uses() -> None:
    rules = {
        (g, r, v)
        for d in documents()
        if d["kind"] in ("ClusterRole", "Role")
        for rule in d["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("", "services", "update") not in rules and ("", "services", "delete") not in rules
    assert not any(r == "secrets" for _, r, _ in rules)
    assert not any(v == "*" or r == "*" for _, r, v in rules)

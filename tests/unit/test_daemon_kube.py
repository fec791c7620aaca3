"""The daemon with the Kubernetes API as its source (KubeLink against the API stand-in):
a new Service gets a VIP in the kernel stand-in, in DNS and in its status; deleting it
takes it out of all three."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from appliance.config import ClusterConfig, Config, Pool
from appliance.daemon import snapshot
from appliance.daemon.loop import Daemon
from appliance.daemon.parts import KubeFeed, Parts
from appliance.kube.api import Connection, KubeApi
from appliance.kube.link import KubeLink
from appliance.status import to_json
from tests.kube.objects import endpoint_slice, node, service
from tests.support.fake_apiserver import FakeApiServer
from tests.unit.test_daemon import MemoryDataplane, MemoryDns

POOL = Pool("p", ((ipaddress.ip_address("198.18.50.32"), ipaddress.ip_address("198.18.50.39")),))
CONFIG = Config(pools=(POOL,), cluster=ClusterConfig(kubeconfig="in-cluster"))


def test_services_from_the_api_reach_the_dataplane_dns_and_their_status() -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
            fake.create("nodes", node("n1", "198.18.50.11"))
            svc = service("web")
            svc["spec"]["ports"][0]["nodePort"] = 30080
            fake.create("services", svc)
            fake.create("endpointslices", endpoint_slice("web", ("198.18.64.10",)))
            journal: list[str] = []
            dataplane, dns = MemoryDataplane(journal), MemoryDns(journal)
            link = KubeLink(KubeApi(Connection(fake.url, token=fake.token)), CONFIG, "lb-1")
            config = dataclasses.replace(
                CONFIG, health=dataclasses.replace(CONFIG.health, enabled=False)
            )
            daemon = Daemon(config, Parts(KubeFeed(link), dataplane, None, dns), host="lb-1")
            task = asyncio.create_task(daemon.run())

            async def until(cond: object, what: str) -> None:
                for _ in range(400):
                    if cond():  # type: ignore[operator]
                        return
                    await asyncio.sleep(0.02)
                raise AssertionError(f"never happened: {what}; journal {journal[-5:]}")

            def ingress() -> list[str]:
                got = fake.get("services", "default", "web") or {}
                lb = got.get("status", {}).get("loadBalancer", {})
                return [i["ip"] for i in lb.get("ingress", [])]

            try:
                await until(lambda: ingress() == ["198.18.50.32"], "status written back")
                desired = dataplane.applied[-1]
                assert [vs.vip for vs in desired.virtual_services] == ["198.18.50.32"]
                assert [rs.address for rs in desired.virtual_services[0].real_servers] == [
                    "198.18.50.11"
                ]
                assert any(r.data == "198.18.50.32" for r in dns.records)
                s = to_json(snapshot.build(daemon))
                assert s["source"]["kind"] == "kube" and s["source"]["writer"] is True
                assert {r["kind"] for r in s["source"]["resources"]} >= {"Service", "Node"}
                fake.delete("services", "default", "web")
                await until(lambda: not dataplane.applied[-1].virtual_services, "removed")
                assert not any(r.data == "198.18.50.32" for r in dns.records)
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, 5)

    asyncio.run(asyncio.wait_for(main(), 30))

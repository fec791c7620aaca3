"""KubeLink, the daemon's view: two LB hosts on one cluster, one writes status."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress

from appliance.config import ClusterConfig, Config, Pool
from appliance.kube.api import Connection, KubeApi
from appliance.kube.link import KubeLink
from appliance.plan import Planner
from tests.kube.objects import service
from tests.support.fake_apiserver import FakeApiServer

POOL = Pool("p", ((ipaddress.ip_address("198.18.100.0"), ipaddress.ip_address("198.18.100.9")),))
CONFIG = Config(pools=(POOL,), cluster=ClusterConfig(kubeconfig="in-cluster"))


async def host(link: KubeLink, reports: list[object]) -> None:
    planner = Planner(link.config)
    async for state in link.states():
        reports.append(await link.publish(state, planner.plan(state)))


def test_two_hosts_one_writer_same_addresses() -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
            for name in ("a", "b", "c"):
                fake.create("services", service(name))
            links = [
                KubeLink(KubeApi(Connection(fake.url, token=fake.token)), CONFIG, who)
                for who in ("lb-1", "lb-2")
            ]
            reports: list[list[object]] = [[], []]
            async with contextlib.AsyncExitStack() as stack:
                for link in links:
                    await stack.enter_async_context(link)
                tasks = [
                    asyncio.create_task(host(lk, r)) for lk, r in zip(links, reports, strict=True)
                ]
                for _ in range(200):
                    got = [fake.get("services", "default", n) for n in ("a", "b", "c")]
                    if all(g and g["status"]["loadBalancer"].get("ingress") for g in got):
                        break
                    await asyncio.sleep(0.05)
                ips = sorted(g["status"]["loadBalancer"]["ingress"][0]["ip"] for g in got)  # type: ignore[index]
                assert ips == ["198.18.100.0", "198.18.100.1", "198.18.100.2"]
                writers = [lk.status().writer for lk in links]
                assert sorted(writers) == [False, True]
                silent = links[writers.index(False)]
                assert silent.events.sent == 0
                lease = fake.get("leases", "appliance-system", "appliance-status-writer")
                assert lease is not None
                assert (
                    lease["spec"]["holderIdentity"] == links[writers.index(True)].elector.identity
                )
                for t in tasks:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    asyncio.run(asyncio.wait_for(main(), 30))


def test_write_status_off_never_takes_the_lease() -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
            fake.create("services", service("a"))
            config = dataclasses.replace(
                CONFIG, cluster=dataclasses.replace(CONFIG.cluster, write_status=False)
            )
            reports: list[object] = []
            link = KubeLink(KubeApi(Connection(fake.url, token=fake.token)), config, "lb-1")
            async with link:
                task = asyncio.create_task(host(link, reports))
                while not reports:
                    await asyncio.sleep(0.02)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert fake.objects("leases") == []
            assert not fake.get("services", "default", "a")["status"]["loadBalancer"]  # type: ignore[index]

    asyncio.run(asyncio.wait_for(main(), 30))

"""Status write-back and Events against the stand-in, from plans made by the real
planner."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.config import ClusterConfig, Config, Pool
from appliance.kube.api import Connection, KubeApi
from appliance.kube.events import EventRecorder
from appliance.kube.status import StatusWriter
from appliance.model import ClusterState
from appliance.plan import Planner
from tests.kube.harness import Watched, watching
from tests.kube.objects import endpoint_slice, node, service
from tests.support.fake_apiserver import FakeApiServer

POOL = Pool("p", ((ipaddress.ip_address("198.18.100.0"), ipaddress.ip_address("198.18.100.1")),))
CONFIG = Config(pools=(POOL,), cluster=ClusterConfig(kubeconfig="in-cluster"))


class Rig:
    def __init__(self, fake: FakeApiServer, api: KubeApi, w: Watched, writer: StatusWriter) -> None:
        self.fake, self.api, self.w, self.writer = fake, api, w, writer
        self.planner = Planner(CONFIG)

    async def sync(self, check: Callable[[ClusterState], bool] = lambda s: True) -> Any:
        state = await self.w.until(check)
        return await self.writer.sync(state, self.planner.plan(state))

    def ingress(self, name: str, ns: str = "default") -> list[dict[str, Any]]:
        obj = self.fake.get("services", ns, name)
        assert obj is not None
        result: list[dict[str, Any]] = obj["status"].get("loadBalancer", {}).get("ingress", [])
        return result

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = self.fake.objects("events")
        return [e for e in found if name is None or e["regarding"]["name"] == name]

    def patches(self) -> int:
        return sum(1 for m, p in self.fake.requests if m == "PATCH" and p.endswith("/status"))


def run(test: Callable[[Rig], Awaitable[None]], writer_kw: dict[str, Any] | None = None) -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("nodes", node("n1", "198.18.0.11"))
            async with (
                KubeApi(Connection(fake.url, token=fake.token)) as api,
                watching(fake) as w,
            ):
                events = EventRecorder(api, "lb-1")
                writer = StatusWriter(api, CONFIG, events, **(writer_kw or {}))
                await asyncio.wait_for(test(Rig(fake, api, w, writer)), 20)

    asyncio.run(main())


def test_ours_gets_its_vip_with_ip_mode_and_an_event() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        report = await rig.sync(lambda s: "default/web" in s.services)
        assert report.patched == ("default/web",)
        assert rig.ingress("web") == [{"ip": "198.18.100.0", "ipMode": "VIP"}]
        (event,) = rig.events("web")
        assert (event["type"], event["reason"], event["action"]) == (
            "Normal",
            "IPAllocated",
            "Allocate",
        )
        assert event["note"] == "Assigned IP 198.18.100.0"
        uid = rig.fake.get("services", "default", "web")["metadata"]["uid"]  # type: ignore[index]
        assert event["regarding"] == {
            "kind": "Service",
            "namespace": "default",
            "name": "web",
            "apiVersion": "v1",
            "uid": uid,
        }
        assert event["reportingController"] == "appliance.io/load-balancer"
        assert event["reportingInstance"] == "lb-1"

    run(t)


def test_one_patch_until_the_watch_brings_the_service_back() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        state = await rig.w.until(lambda s: "default/web" in s.services)
        desired = rig.planner.plan(state)
        await rig.writer.sync(state, desired)
        await rig.writer.sync(state, desired)  # the same stale snapshot again
        assert rig.patches() == 1
        report = await rig.sync(lambda s: s.services["default/web"].status_ingress_ips != ())
        assert report.patched == () and rig.patches() == 1

    run(t)


def test_a_service_that_stops_being_ours_is_cleared() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        await rig.sync(lambda s: "default/web" in s.services)
        await rig.sync(lambda s: bool(s.services["default/web"].status_ingress_ips))
        svc = rig.fake.get("services", "default", "web")
        assert svc is not None
        svc["spec"]["loadBalancerClass"] = "example.com/other"
        rig.fake.update("services", svc)
        report = await rig.sync(lambda s: s.services["default/web"].load_balancer_class is not None)
        assert report.cleared == ("default/web",)
        assert rig.ingress("web") == []
        released = [e for e in rig.events("web") if e["reason"] == "IPReleased"]
        assert released and "not ours any more" in released[0]["note"]

    run(t)


def test_another_controllers_address_is_left_alone() -> None:
    async def t(rig: Rig) -> None:
        theirs = service("theirs", load_balancer_class="example.com/other")
        rig.fake.create("services", theirs)
        stored = rig.fake.get("services", "default", "theirs")
        assert stored is not None
        stored["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        rig.fake.store[rig.fake.kind("services")][("default", "theirs")] = stored
        report = await rig.sync(lambda s: "default/theirs" in s.services)
        assert report.patched == report.cleared == ()
        assert rig.ingress("theirs") == [{"ip": "203.0.113.7"}]

    run(t)


def test_pool_exhausted_is_a_warning_event_and_no_status() -> None:
    async def t(rig: Rig) -> None:
        for name in ("a", "b", "c"):
            rig.fake.create("services", service(name))
        report = await rig.sync(lambda s: len(s.services) == 3)
        # Created within one second: the age order falls back to uids, so any two win.
        assert len(report.patched) == 2
        (loser,) = {"a", "b", "c"} - {k.split("/")[1] for k in report.patched}
        assert rig.ingress(loser) == []
        (warning,) = rig.events(loser)
        assert (warning["type"], warning["reason"]) == ("Warning", "AllocationFailed")
        assert warning["note"] == "no free IPv4 address in pool 'p'"
        # The same problem on the next sync is not reported again.
        rig.fake.create("services", service("marker", type_="ClusterIP"))
        await rig.sync(lambda s: "default/marker" in s.services)
        assert len(rig.events(loser)) == 1

    run(t)


def test_real_servers_changed_is_an_event() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        rig.fake.create("endpointslices", endpoint_slice("web", ("198.18.1.1",)))
        await rig.sync(lambda s: "default/web" in s.endpoint_slices)
        rig.fake.create("nodes", node("n2", "198.18.0.12"))
        await rig.sync(lambda s: "n2" in s.nodes)
        changed = [e for e in rig.events("web") if e["reason"] == "RealServersChanged"]
        assert len(changed) == 1
        assert changed[0]["note"] == "real servers: n1, n2 (was n1)"

    run(t)


def test_server_without_ip_mode_gets_plain_ingress() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.ip_mode = False
        rig.fake.create("services", service("web"))
        report = await rig.sync(lambda s: "default/web" in s.services)
        assert report.patched == ("default/web",)
        assert rig.ingress("web") == [{"ip": "198.18.100.0"}]
        assert rig.writer.ip_mode is False

    run(t)


def test_not_the_writer_writes_nothing() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        report = await rig.sync(lambda s: "default/web" in s.services)
        assert report.skipped and rig.patches() == 0 and rig.events() == []

    run(t, {"is_writer": lambda: False})


def test_writes_during_an_outage_fail_and_are_retried() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        state = await rig.w.until(lambda s: "default/web" in s.services)
        await rig.fake.stop()
        report = await rig.writer.sync(state, rig.planner.plan(state))
        assert report.retry and report.failed[0][0] == "default/web"
        await rig.fake.start()
        report = await rig.writer.sync(state, rig.planner.plan(state))
        assert report.patched == ("default/web",) and not report.retry

    run(t)


def test_a_refused_service_gets_a_warning_with_the_reason_once() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("odd"))
        stored = rig.fake.store[rig.fake.kind("services")][("default", "odd")]
        stored["spec"]["ports"] = [{"port": "eighty"}]  # as if stored behind validation
        stored["metadata"]["resourceVersion"] = "999"
        rig.fake.create("services", service("web"))
        await rig.sync(lambda s: "default/web" in s.services)
        rig.fake.create("services", service("marker", type_="ClusterIP"))
        await rig.sync(lambda s: "default/marker" in s.services)
        (refused,) = rig.events("odd")
        assert (refused["type"], refused["reason"], refused["action"]) == (
            "Warning",
            "Refused",
            "Validate",
        )
        assert "port" in refused["note"]
        assert rig.writer.events is not None and rig.writer.events.dropped >= 1  # the repeat

    run(t)


def test_a_sync_cancelled_mid_flight_is_redone_by_the_next() -> None:
    async def t(rig: Rig) -> None:
        rig.fake.create("services", service("web"))
        state = await rig.w.until(lambda s: "default/web" in s.services)
        desired = rig.planner.plan(state)
        rig.fake.delay = 0.5
        first = asyncio.create_task(rig.writer.sync(state, desired))
        while rig.patches() == 0:  # the patch is on its way, its answer delayed
            await asyncio.sleep(0.01)
        first.cancel()  # as the daemon does when a newer plan supersedes this one
        with contextlib.suppress(asyncio.CancelledError):
            await first
        rig.fake.delay = 0.0
        report = await rig.writer.sync(state, desired)  # the same snapshot: no news from the watch
        assert report.patched == ("default/web",)

    run(t)

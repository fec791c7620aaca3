"""The API source against the stand-in: list then watch, identity kept, refusals,
bookmarks that spare a relist, relist on 410."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.kube.harness import watching
from tests.kube.objects import endpoint_slice, ingress, node, service
from tests.support.fake_apiserver import FakeApiServer


def run(test: Callable[[FakeApiServer], Awaitable[None]], **kw: object) -> None:
    async def main() -> None:
        async with FakeApiServer(**kw) as fake:  # type: ignore[arg-type]
            await asyncio.wait_for(test(fake), 30)

    asyncio.run(main())


def seed(fake: FakeApiServer) -> None:
    fake.create("nodes", node("n1", "198.18.0.11"))
    fake.create("nodes", node("n2", "198.18.0.12"))
    fake.create("services", service("web"))
    fake.create("services", service("db", "data"))
    fake.create("endpointslices", endpoint_slice("web", ("198.18.1.1", "198.18.1.2")))
    fake.create("ingresses", ingress("site", "www.example.test"))


def test_first_snapshot_has_every_kind() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake) as w:
            state = await w.until(lambda s: True)
            assert sorted(state.services) == ["data/db", "default/web"]
            assert sorted(state.nodes) == ["n1", "n2"]
            assert state.nodes["n1"].address_for("IPv4") == "198.18.0.11"
            (web_slice,) = state.endpoint_slices["default/web"]
            assert [e.addresses for e in web_slice.endpoints] == [("198.18.1.1",), ("198.18.1.2",)]
            assert state.ingresses["default/site"].hosts == ("www.example.test",)
            assert state.services["default/web"].ports[0].node_port == 30000
            assert state.refused == ()

    run(t)


def test_changes_arrive_and_unchanged_objects_keep_their_identity() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake) as w:
            first = await w.until(lambda s: True)
            fake.create("services", service("new"))
            second = await w.until(lambda s: "default/new" in s.services)
            assert second.services["default/web"] is first.services["default/web"]
            assert second.nodes["n1"] is first.nodes["n1"]
            assert second.endpoint_slices["default/web"] is first.endpoint_slices["default/web"]
            slice_ = fake.get("endpointslices", "default", "web-abc")
            assert slice_ is not None
            slice_["endpoints"] = slice_["endpoints"][:1]
            fake.update("endpointslices", slice_)
            third = await w.until(lambda s: len(s.endpoint_slices["default/web"][0].endpoints) == 1)
            assert third.services["default/web"] is first.services["default/web"]
            fake.delete("services", "data", "db")
            fourth = await w.until(lambda s: "data/db" not in s.services)
            assert fourth.endpoint_slices["default/web"] is third.endpoint_slices["default/web"]

    run(t)


def test_a_node_heartbeat_makes_no_snapshot() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake) as w:
            await w.until(lambda s: True)
            n1 = fake.get("nodes", "", "n1")
            assert n1 is not None
            n1["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-21T00:00:00Z"
            fake.update("nodes", n1)
            fake.create("services", service("marker"))
            await w.until(lambda s: "default/marker" in s.services)
            assert len(w.snapshots) == 2  # the first and the marker's; none for the heartbeat

    run(t)


def test_an_object_the_api_would_not_give_us_is_refused_not_fatal() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        # Written behind validation's back, as an older API version might have stored it.
        bad = service("odd")
        fake.create("services", bad)
        stored = fake.store[fake.kind("services")][("default", "odd")]
        stored["spec"]["ports"] = [{"port": "eighty"}]
        async with watching(fake) as w:
            state = await w.until(lambda s: True)
            assert "default/odd" not in state.services
            (refusal,) = state.refused
            assert (refusal.kind, refusal.namespace, refusal.name) == ("Service", "default", "odd")
            assert "port" in refusal.reason
            assert "default/web" in state.services

    run(t)


def test_bookmarks_spare_a_relist_after_compaction() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake) as w:
            await w.until(lambda s: True)
            fake.create("secrets", {"metadata": {"name": "x"}})  # the revision moves on
            # Bookmarks bring every reflector to the current version (none of them saw
            # the Secret); wait for them rather than for a fixed time.
            for _ in range(500):
                if all(st.resource_version == str(fake.revision) for st in w.source.status()):
                    break
                await asyncio.sleep(0.01)
            versions = {st.kind: st.resource_version for st in w.source.status()}
            assert set(versions.values()) == {str(fake.revision)}, versions
            fake.compact()
            fake.drop_watches()
            fake.create("services", service("after"))
            await w.until(lambda s: "default/after" in s.services)
            assert all(st.relists == 0 for st in w.source.status())

    run(t, bookmark_interval=0.05)


def test_410_gone_relists_and_picks_up_what_was_missed() -> None:
    async def t(fake: FakeApiServer) -> None:
        seed(fake)
        async with watching(fake) as w:
            await w.until(lambda s: True)
            fake.drop_watches()
            fake.delete("services", "data", "db")
            fake.create("services", service("missed"))
            fake.compact()  # the watches come back from versions that are gone
            state = await w.until(lambda s: "default/missed" in s.services)
            assert "data/db" not in state.services
            status = {st.kind: st for st in w.source.status()}
            assert status["Service"].relists >= 1
            assert "too old resource version" in status["Service"].last_error

    run(t, bookmark_interval=60)


def test_client_closed_before_the_snapshots_end_is_quiet() -> None:
    async def t(fake: FakeApiServer) -> None:
        from appliance.cluster.kube import KubeSource
        from appliance.kube.api import Connection, KubeApi

        seed(fake)
        api = KubeApi(Connection(fake.url, token=fake.token))
        source = KubeSource(api, backoff_base=0.01, backoff_max=0.05)
        states = source.watch()
        first = await anext(states)
        await api.close()  # the daemon's shutdown order may be this one
        for _ in range(500):
            if all("client is closed" in st.last_error for st in source.status()):
                break
            await asyncio.sleep(0.01)
        assert all("client is closed" in st.last_error for st in source.status()), source.status()
        assert source.state is first
        await states.aclose()  # raises nothing

    run(t)


def test_a_kind_the_server_does_not_serve_counts_as_none() -> None:
    async def t(fake: FakeApiServer) -> None:
        from appliance.cluster.kube import INGRESSES, RESOURCES, Resource

        seed(fake)
        missing = Resource("/apis/networking.k8s.io/v1beta9/ingresses", "Ingress", "x/v1beta9")
        kinds = tuple(missing if r is INGRESSES else r for r in RESOURCES)
        async with watching(fake, resources=kinds, backoff_max=0.05) as w:
            state = await w.until(lambda s: True)
            assert state.ingresses == {} and "default/web" in state.services
            status = {st.kind: st for st in w.source.status()}
            assert status["Ingress"].last_error.startswith("not served by this API server: 404")

    run(t)

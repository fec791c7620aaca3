"""The stand-in's own behaviour beyond the shared scenarios: bookmarks, 410 after a
compaction, watches from no version, tokens, restarts with storage kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.kube.objects import service
from tests.kube.scenarios import Raw, svc_path
from tests.support.fake_apiserver import FakeApiServer


def run(test: Callable[[FakeApiServer, Raw], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        async with FakeApiServer(**kw) as fake:
            raw = Raw(fake.url, fake.token)
            try:
                await asyncio.wait_for(test(fake, raw), 20)
            finally:
                await raw.close()

    asyncio.run(main())


def test_bookmarks_carry_the_current_version() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        _, listed = await raw.call("GET", svc_path("default"))
        fake.create("nodes", {"metadata": {"name": "n1"}})  # moves the version, not services
        params = {
            "resourceVersion": listed["metadata"]["resourceVersion"],
            "allowWatchBookmarks": "true",
        }
        events = await raw.watch("/api/v1/services", params, lambda e: len(e) >= 1)
        assert events[0]["type"] == "BOOKMARK"
        assert events[0]["object"]["metadata"]["resourceVersion"] == str(fake.revision)
        assert events[0]["object"]["kind"] == "Service"

    run(t, bookmark_interval=0.1)


def test_no_bookmarks_unless_asked() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        params = {"resourceVersion": str(fake.revision), "timeoutSeconds": "1"}
        events = await raw.watch("/api/v1/services", params, lambda e: False)
        assert events == []

    run(t, bookmark_interval=0.1)


def test_watch_from_a_compacted_version_gets_410_expired() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        old = str(fake.revision)
        fake.create("services", service("b"))
        fake.compact()
        events = await raw.watch("/api/v1/services", {"resourceVersion": old}, lambda e: False)
        assert [e["type"] for e in events] == ["ERROR"]
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"
        # The current version still works.
        params = {"resourceVersion": str(fake.revision), "timeoutSeconds": "1"}
        assert await raw.watch("/api/v1/services", params, lambda e: False) == []

    run(t)


def test_watch_without_a_version_starts_with_the_objects() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        fake.create("services", service("b", "other"))
        events = await raw.watch("/api/v1/namespaces/other/services", {}, lambda e: len(e) >= 1)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]

    run(t)


def test_a_token_is_required() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        raw.token = "wrong"
        status, body = await raw.call("GET", "/api/v1/services")
        assert (status, body["reason"]) == (401, "Unauthorized")

    run(t)


def test_a_patch_of_unknown_media_type_is_refused_with_415() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        status, _ = await raw.call("PATCH", svc_path("default", "a"), {}, "text/plain")
        assert status == 415

    run(t)


def test_events_need_their_fields() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        path = "/apis/events.k8s.io/v1/namespaces/default/events"
        status, body = await raw.call("POST", path, {"metadata": {"name": "e1"}, "type": "Info"})
        assert (status, body["reason"]) == (422, "Invalid")
        for field in ("eventTime", "reportingController", "action", "reason", "type"):
            assert field in body["message"]

    run(t)


def test_a_no_op_patch_keeps_the_version_and_sends_no_event() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        before = fake.revision
        status, got = await raw.call(
            "PATCH",
            svc_path("default", "a") + "/status",
            {"status": {"loadBalancer": {}}},
            "application/merge-patch+json",
        )
        assert status == 200 and fake.revision == before
        assert got["metadata"]["resourceVersion"] == str(before)

    run(t)


def test_restart_keeps_the_objects_and_the_port() -> None:
    async def t(fake: FakeApiServer, raw: Raw) -> None:
        fake.create("services", service("a"))
        port = fake.port
        await fake.stop()
        try:
            await raw.call("GET", "/api/v1/services")
            raise AssertionError("a stopped server answered")
        except OSError:
            pass
        await fake.start()
        assert fake.port == port
        status, listed = await raw.call("GET", "/api/v1/services")
        assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["a"]

    run(t)

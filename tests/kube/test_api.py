"""The API client's edges: TLS with the cluster's CA (real TLS on loopback), token files,
errors as ApiError with the Status reason, 410 as an HTTP status or an ERROR event,
garbage on a watch."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from appliance.kube.api import ApiError, Connection, KubeApi
from tests.support.fake_apiserver import FakeApiServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "server.crt", where / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_the_clusters_ca(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def main() -> None:
        async with FakeApiServer(tls=ctx) as fake:
            assert fake.url.startswith("https://")
            good = Connection(fake.url, token=fake.token, ca_file=str(cert))
            async with KubeApi(good) as api:
                listed = await api.request("GET", "/api/v1/services")
                assert listed["kind"] == "ServiceList"
            unknown_ca = Connection(fake.url, token=fake.token)
            async with KubeApi(unknown_ca) as api:
                with pytest.raises(ApiError) as info:
                    await api.request("GET", "/api/v1/services")
                # ours: no HTTP code, the request named; the cause is a TLS verification
                # failure by type (aiohttp's and OpenSSL's wording of it is theirs)
                assert info.value.code == 0
                assert info.value.message.startswith("GET /api/v1/services: ")
                assert isinstance(info.value.__cause__, aiohttp.ClientSSLError | ssl.SSLError)
            pem = cert.read_text()
            async with KubeApi(Connection(fake.url, token=fake.token, ca_data=pem)) as api:
                await api.request("GET", "/api/v1/nodes")

    asyncio.run(main())


def test_token_file_and_error_reasons(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("test-token\n")

    async def main() -> None:
        async with FakeApiServer() as fake:
            async with KubeApi(Connection(fake.url, token_file=str(token))) as api:
                await api.request("GET", "/api/v1/services")
                with pytest.raises(ApiError) as info:
                    await api.request("GET", "/api/v1/namespaces/default/services/nope")
                assert (info.value.code, info.value.reason) == (404, "NotFound")
            async with KubeApi(Connection(fake.url, token="wrong")) as api:
                with pytest.raises(ApiError) as info:
                    await api.request("GET", "/api/v1/services")
                assert (info.value.code, info.value.reason) == (401, "Unauthorized")

    asyncio.run(main())


async def odd_server() -> tuple[web.AppRunner, str]:
    async def watch(request: web.Request) -> web.StreamResponse:
        mode = request.query.get("resourceVersion")
        if mode == "http410":
            body = {"kind": "Status", "code": 410, "reason": "Gone", "message": "gone"}
            return web.json_response(body, status=410)
        if mode == "html500":
            return web.Response(status=500, text="<html>proxy error</html>")
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n')
        await resp.write(b"not json\n")
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/services", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def events(api: KubeApi, version: str) -> AsyncIterator[dict[str, object]]:
    async for e in api.watch("/api/v1/services", {"resourceVersion": version}):
        yield e


def test_watch_errors() -> None:
    async def main() -> None:
        runner, url = await odd_server()
        try:
            async with KubeApi(Connection(url)) as api:
                with pytest.raises(ApiError) as info:
                    [e async for e in events(api, "http410")]
                assert info.value.gone
                with pytest.raises(ApiError) as info:
                    [e async for e in events(api, "html500")]
                assert info.value.code == 500 and "proxy error" in info.value.message
                seen: list[object] = []
                with pytest.raises(ApiError) as info:
                    async for e in events(api, "garbage"):
                        seen.append(e)
                assert len(seen) == 1 and "not an event" in info.value.message
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_an_error_event_is_raised_with_its_status() -> None:
    async def main() -> None:
        async with FakeApiServer() as fake:
            fake.create("services", {"metadata": {"name": "a"}, "spec": {"ports": [{"port": 1}]}})
            fake.compact()
            async with KubeApi(Connection(fake.url, token=fake.token)) as api:
                with pytest.raises(ApiError) as info:
                    [e async for e in events(api, "1")]
                assert info.value.gone and info.value.reason == "Expired"
                assert "too old resource version" in info.value.message

    asyncio.run(main())

"""`appliance kubeconfig`: a kubeconfig for LB hosts minted from the ServiceAccount, that
then works against the API server."""

from __future__ import annotations

import argparse
import asyncio
import base64
import stat
import threading
from pathlib import Path

import pytest
import yaml

from appliance.commands.kube import parse_duration, register
from appliance.kube.api import Connection, KubeApi, from_kubeconfig
from tests.support.fake_apiserver import FakeApiServer


class Background:
    """The stand-in on its own loop in a thread: the command runs its own asyncio.run."""

    def __init__(self) -> None:
        self.fake = FakeApiServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def admin_kubeconfig(path: Path, url: str, token: str) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": url, "certificate-authority-data": ca.decode()},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "admin"}}],
                "current-context": "admin",
            }
        )
    )


def run_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["kubeconfig", *argv])
    code: int = args.func(args)
    return code


def test_mint_from_a_token_request_and_use_it(tmp_path: Path) -> None:
    with Background() as fake:
        fake.create("namespaces", {"metadata": {"name": "appliance-system"}})
        fake.create(
            "serviceaccounts", {"metadata": {"name": "appliance", "namespace": "appliance-system"}}
        )
        admin = tmp_path / "admin"
        admin_kubeconfig(admin, fake.url, fake.token or "")
        out = tmp_path / "lb.kubeconfig"
        code = run_command(["--admin-kubeconfig", str(admin), "--duration", "24h", "-o", str(out)])
        assert code == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        conn = from_kubeconfig(str(out))
        assert conn.server == fake.url and conn.namespace == "appliance-system"
        assert conn.token and conn.token != fake.token and conn.token in fake.minted
        assert conn.ca_data is not None and "BEGIN CERTIFICATE" in conn.ca_data

        async def use() -> int:
            async with KubeApi(Connection(conn.server, token=conn.token)) as api:
                listed = await api.request("GET", "/api/v1/services")
                return len(listed["items"])

        assert asyncio.run(use()) == 0
        assert ("POST", "/api/v1/namespaces/appliance-system/serviceaccounts/appliance/token") in (
            fake.requests
        )


def test_mint_from_a_token_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Background() as fake:
        token = base64.b64encode(b"long-lived").decode()
        fake.create(
            "secrets",
            {
                "metadata": {"name": "appliance-token", "namespace": "appliance-system"},
                "data": {"token": token},
            },
        )
        admin = tmp_path / "admin"
        admin_kubeconfig(admin, fake.url, fake.token or "")
        assert run_command(["--admin-kubeconfig", str(admin), "--secret", "appliance-token"]) == 0
        minted = yaml.safe_load(capsys.readouterr().out)
        assert minted["users"][0]["user"] == {"token": "long-lived"}


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Background() as fake:
        admin = tmp_path / "admin"
        admin_kubeconfig(admin, fake.url, fake.token or "")
        assert run_command(["--admin-kubeconfig", str(admin)]) == 1  # no such ServiceAccount
        err = capsys.readouterr().err.strip()
        assert err.startswith(
            "appliance kubeconfig: cannot get a token for appliance-system/appliance"
        )
        assert "\n" not in err
    assert run_command(["--admin-kubeconfig", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("90m", 5400), ("365d", 31536000)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "5m", "1y", "-1h"])
def test_bad_durations(text: str) -> None:
    from appliance.commands.kube import CommandError

    with pytest.raises(CommandError):
        parse_duration(text)

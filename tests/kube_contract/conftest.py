"""A real kube-apiserver on etcd, for the contract suite.

kube-apiserver comes from no registry this machine can reach (not Debian, not PyPI), so
the suite runs only when `KUBE_APISERVER` names the binary (from a Kubernetes release:
`kubernetes-server-linux-amd64.tar.gz`, `server/bin/kube-apiserver`); etcd is Debian's
`etcd-server`. Both run on 127.0.0.1 as children of the test session, and are ended by
PID when it ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN_TOKEN = "contract-admin-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _prerequisites() -> str | None:
    binary = os.environ.get("KUBE_APISERVER")
    if not binary:
        return (
            "KUBE_APISERVER is not set: no kube-apiserver binary (it comes from no registry "
            "this machine reaches); tests/kube/ ran the same scenarios against the stand-in"
        )
    if not os.access(binary, os.X_OK):
        return f"KUBE_APISERVER={binary} is not an executable"
    if shutil.which("etcd") is None:
        return "etcd is missing (Debian: etcd-server)"
    if shutil.which("openssl") is None:
        return "openssl is missing (for the service account signing key)"
    return None


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(
                url + "/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready within {timeout} s")


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def apiserver() -> Iterator[str]:
    """The URL of a real kube-apiserver that takes ADMIN_TOKEN (system:masters)."""
    reason = _prerequisites()
    if reason:
        pytest.skip(reason)
    binary = os.environ["KUBE_APISERVER"]
    with tempfile.TemporaryDirectory(prefix="kube-contract-") as tmp:
        work = Path(tmp)
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        logs = (work / "etcd.log").open("wb"), (work / "apiserver.log").open("wb")
        etcd = subprocess.Popen(
            [
                "etcd",
                "--data-dir", str(work / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        api: subprocess.Popen[bytes] | None = None
        try:
            key = work / "sa.key"
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                           capture_output=True)  # fmt: skip
            (work / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
            api = subprocess.Popen(
                [
                    binary,
                    "--etcd-servers", etcd_url,
                    "--bind-address", "127.0.0.1",
                    "--advertise-address", "127.0.0.1",
                    "--secure-port", str(api_port),
                    "--cert-dir", str(work / "certs"),
                    "--token-auth-file", str(work / "tokens.csv"),
                    "--authorization-mode", "RBAC",
                    "--service-account-issuer", "https://kubernetes.default.svc",
                    "--service-account-key-file", str(key),
                    "--service-account-signing-key-file", str(key),
                    "--service-cluster-ip-range", "198.19.0.0/16",
                    "--endpoint-reconciler-type", "none",  # 127.0.0.1 is no endpoint
                ],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"https://127.0.0.1:{api_port}"
            _wait_ready(url, api)
            yield url
        finally:
            if api is not None:
                _end(api)
            _end(etcd)
            for log in logs:
                log.close()

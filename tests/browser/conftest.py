"""The daemon as a newcomer runs it (examples/standalone.yaml in a namespace with only lo),
looked at in headless Chromium. Screenshots go to out/browser/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.netns import why_no_netns

NS = "adm-web"
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "out" / "browser"


def _why_not() -> str | None:
    why = why_no_netns(
        "adm-web-", ("ip", "nft", "curl", "/usr/bin/chromium", "/usr/bin/chromedriver")
    )
    if why:
        return why
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e .[dev])"
    return None


def _ns(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", NS, *argv], check=False, capture_output=True, text=True
    )


class Standalone:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def state(self) -> Any:
        r = _ns("curl", "-s", "-m", "2", "http://127.0.0.1:8080/api/v1/state")
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout else None

    def wait_for(self, what: str, cond: Any, limit: float = 20.0) -> Any:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                value = cond()
            except (KeyError, TypeError, IndexError):
                value = None
            if value:
                return value
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"never happened: {what}\n{self.log.read_text()[-3000:]}")

    def browse(self) -> Any:
        r = _ns(sys.executable, str(Path(__file__).parent / "adm_browse.py"),
                "http://127.0.0.1:8080/", str(OUT))  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    why = _why_not()
    if why:
        pytest.skip(why)
    subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)
    work = tmp_path_factory.mktemp("adm-web")
    s = Standalone(work / "daemon.log")
    # The example as it is, but its manifests found from here and its allocations kept in
    # the test's folder, not this machine's /var/lib/appliance.
    example = REPO / "examples" / "standalone.yaml"
    config = yaml.safe_load(example.read_text())
    config["cluster"]["manifests"] = str(example.parent / config["cluster"]["manifests"])
    config["state_dir"] = str(work / "state")
    (work / "standalone.yaml").write_text(yaml.safe_dump(config))
    try:
        subprocess.run(["ip", "netns", "add", NS], check=True)
        _ns("ip", "link", "set", "lo", "up")
        _ns("sysctl", "-qw", "net.ipv4.ip_forward=1")  # the one kernel setting it needs
        with open(s.log, "wb") as log:
            s.proc = subprocess.Popen(
                ["ip", "netns", "exec", NS, sys.executable, "-m", "appliance.daemon", "run",
                 "--config", str(work / "standalone.yaml")],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
        yield s
    finally:
        if s.proc is not None:
            if s.proc.poll() is None:
                s.proc.terminate()
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)

"""`appliance lab up|status|down` as a person runs them: the command returns, the lab
stays; `down` removes everything, even when the record of what runs was lost (a crash)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.lab import topology
from tests.e2e.conftest import REPO
from tests.health.backends import free_port
from tests.support.netns import why_no_netns

pytestmark = pytest.mark.root
PREFIX = "aanlabcli-"


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "lab", "--prefix", PREFIX, *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An orphan that exited but is not reaped yet is gone for our purpose.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_down_after_a_crash_removes_everything() -> None:
    why = why_no_netns(PREFIX, ("ip", "nft", "curl"))
    if why:
        pytest.skip(why)
    lab("down")
    port = free_port(["127.0.0.1"])
    try:
        up = lab("up", "--lb", "none", "--web-port", str(port), "--web-port", "0")
        assert up.returncode == 0, up.stderr
        st = lab("status", "--json")
        status = json.loads(st.stdout)
        assert len(status["namespaces"]) == len(topology.HOSTS) + 1
        pids = [pid for pid, running in status["processes"].values() if running]
        assert len(pids) == 4, status  # three nodes and lb1's page
        # The nodes answer from the lab's LAN: node-2's kube-proxy health endpoint.
        done = subprocess.run(
            ["ip", "netns", "exec", f"{PREFIX}client", "curl", "-s", "-m", "2",
             "http://198.18.0.12:10256/healthz"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert '"nodeEligible": true' in done.stdout or '"nodeEligible":true' in done.stdout
        # A crash loses the record of what runs: down finds it all by name anyway.
        (Path(status["state"]) / "pids.json").unlink()
        down = lab("down")
        assert down.returncode == 0, down.stderr
        assert not [p for p in pids if alive(p)], down.stdout
        assert topology.existing(PREFIX) == []
        assert not Path(status["state"]).exists()
        assert "no lab" in lab("status").stdout
    finally:
        lab("down")

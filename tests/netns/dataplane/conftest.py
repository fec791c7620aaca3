"""The nftables dataplane, for real, in network namespaces (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from adp_lab import Lab


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command (apt-packages.txt)"
    probe = subprocess.run(["ip", "netns", "add", "adp-probe"], check=False, capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", "adp-probe"], check=False, capture_output=True)
    return None


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    why = _why_not()
    if why:
        pytest.skip(why)
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()

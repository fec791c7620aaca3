"""Fixtures for the HA interop suite: root, namespaces, keepalived as a peer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ha_lan import Lan, lan


def _namespaces_work() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = subprocess.run(
        ["ip", "netns", "add", "aha-probe"], check=False, capture_output=True, text=True
    )
    subprocess.run(["ip", "netns", "del", "aha-probe"], check=False, capture_output=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.strip()}"
    return None


_WHY_NOT = _namespaces_work()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.root)
            if _WHY_NOT:
                item.add_marker(pytest.mark.skip(reason=_WHY_NOT))


@pytest.fixture
def ha_lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    # A short tag per test keeps interface names under 15 characters.
    tag = f"{abs(hash(request.node.nodeid)) % 1000:03d}"
    with lan(tag) as net:
        yield net

"""Fixtures for the HA interop suite: root, namespaces, keepalived as a peer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import why_no_netns

sys.path.insert(0, str(Path(__file__).parent))

from ha_lan import Lan, lan


def _namespaces_work() -> str | None:
    return why_no_netns("aha-")


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

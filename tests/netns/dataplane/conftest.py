"""The nftables dataplane, for real, in network namespaces (root)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import why_no_netns

sys.path.insert(0, str(Path(__file__).parent))

from adp_lab import Lab


def _why_not() -> str | None:
    return why_no_netns("adp-", ("ip", "nft", "conntrack"))


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

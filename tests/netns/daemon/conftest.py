"""The real daemon in network namespaces (root): files source, nftables, VRRP, DNS, health,
the web. One site per module; everything is torn down even when a test fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import why_no_netns

sys.path.insert(0, str(Path(__file__).parent))

from adm_lab import Site


def _why_not() -> str | None:
    return why_no_netns("adm-", ("ip", "nft", "curl", "dig", "keepalived"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    why = _why_not()
    if why:
        pytest.skip(why)
    s = Site(tmp_path_factory.mktemp("adm"))
    try:
        s.up()
        s.start_keepalived()
        s.wait_for("keepalived up", lambda: s.keepalived_state() is not None)
        s.start_daemon()
        s.wait_for("ready", lambda: s.get("/readyz")[0] == 200)
        yield s
    finally:
        s.down()

"""The status page in a real browser: the VIPs, their owner and a down backend are there,
on a desktop and on a phone-sized screen; screenshots are kept under out/browser/."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _down(state: Any) -> list[tuple[str, str]]:
    return [
        (svc["key"], r["node"])
        for svc in state["services"]
        for p in svc["ports"]
        for r in p["real_servers"]
        if r["health"] == "down"
    ]


def _active(state: Any) -> dict[tuple[str, str], str]:
    return {
        (svc["key"], r["node"]): str(r["active_connections"])
        for svc in state["services"]
        for p in svc["ports"]
        for r in p["real_servers"]
        if r["active_connections"] is not None
    }


def _all_read(state: Any) -> bool:
    counts = [r["active_connections"] for svc in state["services"] for p in svc["ports"]
              for r in p["real_servers"]]  # fmt: skip
    return bool(counts) and None not in counts


def test_the_page_shows_vips_owner_and_a_down_backend(standalone: Any) -> None:
    state = standalone.wait_for("ready", lambda: standalone.state()["ready"])
    # The example nodes do not exist in this namespace: their checks fail within seconds.
    standalone.wait_for("a backend down", lambda: _down(standalone.state()))
    # active connections read from conntrack (none here: the nodes do not exist)
    standalone.wait_for("connections read", lambda: _all_read(standalone.state()))
    state = standalone.state()
    seen = standalone.browse()
    for view in ("desktop", "phone"):
        page = seen[view]
        assert page["host"] == state["host"]
        assert set(page["vips"]) == {v["address"] for v in state["vips"]} != set()
        for vip, owner in page["vips"].items():
            assert owner.startswith(state["host"]) and "standalone" in owner, (vip, owner)
        down = {(d["service"], d["node"]) for d in page["down"] if d["visible"]}
        # nodes here only ever go down, so what the page showed is still down now
        assert down and down <= set(_down(standalone.state()))
        assert page["refused"] == len(state["refused"]) > 0
        for header in page["headers"]:  # the active connections next to the weight
            assert header[header.index("weight") + 1] == "active conns", header
        shown = {(c["service"], c["node"]): c["active"] for c in page["conns"]}
        assert shown == _active(state) != {}
        assert "last sync" in page["sync"]
        assert Path(page["screenshot"]).stat().st_size > 10_000
    # Readable on a phone: the page itself never scrolls sideways (wide tables do, inside).
    assert seen["phone"]["overflow"] <= 0

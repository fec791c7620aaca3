"""The nftables program: golden files for whole tables and for incremental transactions."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.dataplane.nftrules import _slots, build, diff, fragment, render_full
from appliance.model import DesiredState, RealServer, VirtualService

GOLDEN = Path(__file__).parent / "golden" / "dataplane"
NODES = (
    RealServer("node-a", "198.18.31.2"),
    RealServer("node-b", "198.18.31.3"),
    RealServer("node-c", "198.18.31.4"),
)


def state(*services: VirtualService) -> DesiredState:
    return DesiredState({}, tuple(services), (), (), (), ())


def sample() -> tuple[VirtualService, ...]:
    return (
        VirtualService("198.18.32.1", 80, "TCP", "rr", 30080, NODES, "default/web", "http"),
        VirtualService(
            "198.18.32.1",
            53,
            "UDP",
            "wrr",
            30053,
            (RealServer("node-a", "198.18.31.2", 1), RealServer("node-b", "198.18.31.3", 2)),
            "default/dns",
        ),
        VirtualService(
            "198.18.32.2",
            443,
            "TCP",
            "sh",
            30443,
            NODES[:2],
            "shop/tls",
            persistence_timeout=10800,
            source_ranges=("198.18.30.0/25", "198.18.30.0/24", "198.18.28.7/32"),
        ),
        VirtualService(
            "fd00:198:18:32::1",
            80,
            "TCP",
            "lc",
            30080,
            (RealServer("node-a", "fd00:198:18:31::2"), RealServer("node-b", "fd00:198:18:31::3")),
            "default/web",
        ),
        VirtualService("198.18.32.3", 9000, "SCTP", "rr", 30900, (), "default/empty"),
        VirtualService(
            "198.18.32.4", 80, "TCP", "rr", 30081, NODES, "default/closed", source_ranges=()
        ),
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"{name} differs from its golden file"


def test_full_table_matches_golden() -> None:
    script = render_full(build(fragment(vs) for vs in sample()), "appliance")
    check_golden("nft_full.nft", script)


def test_one_endpoint_change_touches_map_elements_only() -> None:
    before = sample()
    web = before[0]
    # node-c goes, node-d comes: same slot count, so only elements move.
    moved = replace(web, real_servers=(*NODES[:2], RealServer("node-d", "198.18.31.5")))
    delta = diff(build([fragment(web)]), build([fragment(moved)]), "appliance")
    assert not delta.needs_full
    text = "\n".join(delta.commands) + "\n"
    check_golden("nft_one_endpoint.nft", text)
    assert not any(c.startswith("flush chain inet appliance vs-") for c in delta.commands)
    assert "delete table" not in text


def test_weight_change_and_new_service_golden() -> None:
    web = sample()[0]
    heavier = replace(web, scheduler="wrr", real_servers=(replace(NODES[0], weight=3), *NODES[1:]))
    new = VirtualService("198.18.32.9", 8080, "TCP", "rr", 31080, NODES[:1], "default/new")
    delta = diff(build([fragment(web)]), build([fragment(heavier), fragment(new)]), "appliance")
    check_golden("nft_weight_and_new.nft", "\n".join(delta.commands) + "\n")


def test_unchanged_gives_no_commands() -> None:
    rs = build(fragment(vs) for vs in sample())
    assert diff(rs, rs, "appliance").commands == ()


def test_affinity_timeout_change_needs_full_reload() -> None:
    tls = sample()[2]
    delta = diff(
        build([fragment(tls)]),
        build([fragment(replace(tls, persistence_timeout=60))]),
        "appliance",
    )
    assert delta.needs_full


@pytest.mark.parametrize(
    ("scheduler", "weights", "expected"),
    [
        ("rr", (5, 1, 0), [0, 1]),  # rr ignores weights, weight 0 is out
        ("wrr", (2, 4, 0), [0, 1, 1]),  # reduced by the gcd
        ("wrr", (3, 1, 1), [0, 1, 2, 0, 0]),  # interleaved
        ("wrr", (0, 0, 0), []),
    ],
)
def test_slots(scheduler: str, weights: tuple[int, ...], expected: list[int]) -> None:
    rss = tuple(replace(n, weight=w) for n, w in zip(NODES, weights, strict=True))
    vs = VirtualService("198.18.32.1", 80, "TCP", scheduler, 30080, rss, "x/y")
    assert _slots(vs) == expected


def test_warnings_for_schedulers_nftables_cannot_do() -> None:
    warnings = build(fragment(vs) for vs in sample()).warnings
    assert any("scheduler lc" in w and "round robin" in w for w in warnings)
    assert len(warnings) == 1


def test_bad_source_range_is_a_warning_not_a_crash() -> None:
    vs = replace(sample()[0], source_ranges=("banana", "198.18.30.0/24", "fd00::/8"))
    f = fragment(vs)
    assert [s.elements for s in f.sets if s.name.startswith("src-")] == [("198.18.30.0/24",)]
    assert sum("ignored" in w for w in f.warnings) == 2

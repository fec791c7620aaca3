"""Counting active flows from conntrack's lines (pure): what counts as active, as ours,
as whose; both spellings (the conntrack tool and /proc/net/nf_conntrack); junk lines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.dataplane import conntrack
from appliance.dataplane.conntrack import count_lines, parse_flow

VIP, NODE1, NODE2 = "198.18.32.1", "198.18.31.2", "198.18.31.3"
WEB = (VIP, 80, "TCP")


def tcp(state: str, node: str, sport: int = 40000, vip: str = VIP) -> str:
    return (
        f"tcp      6 431999 {state} src=198.18.30.2 dst={vip} sport={sport} dport=80 "
        f"src={node} dst=198.18.31.1 sport=30080 dport={sport} [ASSURED] mark=16384 use=1"
    )


def udp(node: str, sport: int, unreplied: bool = False) -> str:
    reply = "[UNREPLIED] " if unreplied else ""
    return (
        f"udp      17 29 src=198.18.30.2 dst={VIP} sport={sport} dport=53 {reply}"
        f"src={node} dst=198.18.31.1 sport=30053 dport={sport} mark=16384 use=1"
    )


def test_established_tcp_counts_per_node_other_states_do_not() -> None:
    lines = [
        tcp("ESTABLISHED", NODE1, 1),
        tcp("ESTABLISHED", NODE1, 2),
        tcp("ESTABLISHED", NODE2, 3),
        tcp("TIME_WAIT", NODE2, 4),
        tcp("SYN_SENT", NODE2, 5),
        tcp("FIN_WAIT", NODE1, 6),
    ]
    assert count_lines(lines, {WEB}) == {(*WEB, NODE1): 2, (*WEB, NODE2): 1}


def test_udp_counts_in_any_state() -> None:
    lines = [udp(NODE1, 1), udp(NODE1, 2, unreplied=True), udp(NODE2, 3)]
    assert count_lines(lines, {(VIP, 53, "UDP")}) == {
        (VIP, 53, "UDP", NODE1): 2,
        (VIP, 53, "UDP", NODE2): 1,
    }


def test_only_our_services_and_only_translated_flows() -> None:
    lines = [
        tcp("ESTABLISHED", NODE1, vip="198.18.32.9"),  # a VIP:port not asked about
        tcp("ESTABLISHED", VIP),  # reply from the VIP itself: not DNATed, the host's own
        tcp("ESTABLISHED", NODE2),
    ]
    assert count_lines(lines, {WEB}) == {(*WEB, NODE2): 1}


def test_proc_spelling_with_family_prefix_and_full_ipv6() -> None:
    full = "fd00:0198:0018:0032:0000:0000:0000:0001"
    node = "fd00:0198:0018:0031:0000:0000:0000:0002"
    line = (
        f"ipv6     10 tcp      6 431999 ESTABLISHED src=fd00:0198:0018:0030:0000:0000:0000:0002 "
        f"dst={full} sport=40000 dport=80 src={node} dst=fd00:0198:0018:0031:0000:0000:0000:0001 "
        "sport=30080 dport=40000 [ASSURED] mark=0 zone=0 use=2"
    )
    v4 = "ipv4     2 " + tcp("ESTABLISHED", NODE1)
    got = count_lines([line, v4], {("fd00:198:18:32::1", 80, "TCP"), WEB})
    assert got == {("fd00:198:18:32::1", 80, "TCP", "fd00:198:18:31::2"): 1, (*WEB, NODE1): 1}


def test_sctp_counts_when_established() -> None:
    line = (
        "sctp     132 431999 ESTABLISHED src=198.18.30.2 dst=198.18.32.1 sport=4 dport=9000 "
        "src=198.18.31.2 dst=198.18.31.1 sport=30090 dport=4 [ASSURED] mark=0 use=1"
    )
    assert parse_flow(line) == ((VIP, 9000, "SCTP", NODE1), True)
    assert parse_flow(line.replace("ESTABLISHED", "COOKIE_WAIT"))[1] is False  # type: ignore[index]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "icmp     1 29 src=198.18.30.2 dst=198.18.32.1 type=8 code=0 id=1 src=198.18.31.2 "
        "dst=198.18.30.2 type=0 code=0 id=1 mark=0 use=1",
        "tcp 6 1 ESTABLISHED src=1.2.3.4 dst=198.18.32.1 sport=1 dport=eighty src=x dst=y",
        "tcp 6 1 ESTABLISHED src=1.2.3.4 dst=198.18.32.1 sport=1 dport=80",  # no reply tuple
        "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.",
    ],
)
def test_lines_we_cannot_read_are_skipped(line: str) -> None:
    assert parse_flow(line) is None
    assert count_lines([line, tcp("ESTABLISHED", NODE1)], {WEB}) == {(*WEB, NODE1): 1}


def test_reading_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table bigger than the limit is read only up to it, and says so. The tool is a
    stand-in printing 5,000 flows (the real one runs in the netns suite)."""
    table = tmp_path / "table"
    table.write_text("".join(f"{tcp('ESTABLISHED', NODE1, sport=i)}\n" for i in range(5000)))
    tool = tmp_path / "conntrack"
    tool.write_text(f"#!/bin/sh\nexec cat {table}\n")  # one process, as the real tool
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    whole = asyncio.run(conntrack.count_active({WEB}))
    assert whole.counts == {(*WEB, NODE1): 5000} and not whole.truncated
    cut = asyncio.run(conntrack.count_active({WEB}, limit=1200))
    assert cut.truncated and cut.lines == 1200
    assert cut.counts == {(*WEB, NODE1): 1200}


def test_a_failing_tool_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "conntrack"
    tool.write_text("#!/bin/sh\necho 'conntrack v1.4.7: Operation not permitted' >&2\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(conntrack.DataplaneError, match=r"^conntrack -L: .*not permitted$"):
        asyncio.run(conntrack.count_active({WEB}))


def test_the_backend_never_raises_and_logs_a_new_error_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.dataplane.nft import NftablesBackend

    nft = tmp_path / "nft"  # our table does not exist yet
    nft.write_text("#!/bin/sh\necho 'Error: No such file or directory' >&2\nexit 1\n")
    tool = tmp_path / "conntrack"
    tool.write_text("#!/bin/sh\necho 'conntrack v1.4.7: Operation not permitted' >&2\nexit 1\n")
    for f in (nft, tool):
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    backend = NftablesBackend(table="adp_none")
    with caplog.at_level("INFO", logger="appliance.dataplane"):
        assert asyncio.run(backend.connections()) == {}
        assert asyncio.run(backend.connections()) == {}
        tool.write_text("#!/bin/sh\nexit 0\n")
        assert asyncio.run(backend.connections()) == {}
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dataplane connections unreadable: conntrack -L: conntrack v1.4.7: Operation not permitted",
        "dataplane connections readable again",
    ], lines

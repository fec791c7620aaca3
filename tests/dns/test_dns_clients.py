"""Our server with real clients (dig, kdig) on loopback: UDP and TCP, with and without
EDNS, mixed case, TC and TCP fallback, the zone swapped while serving, counters, the CLI,
and a live fuzz after which it still answers."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from appliance.config import DnsConfig
from appliance.dns.server import DnsServer
from appliance.model import Record
from tests.dns.conftest import DNS, cluster_records, needs_tools
from tests.dns.peers import OurServer, dig, kdig, knotd, our_server

pytestmark = needs_tools
ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "appliance.commands.dns", "dns")


@pytest.fixture(scope="module", params=[True, False], ids=["recvmmsg", "recvfrom"])
def server(request: pytest.FixtureRequest) -> Iterator[OurServer]:
    """Both UDP loops: batched (recvmmsg/sendmmsg) and the portable one."""
    mid = [Record("mid.shop.svc.cluster.local", "A", f"198.18.4.{i}", 5) for i in range(50)]
    with our_server(DNS, [*cluster_records(), *mid], batched=request.param) as s:
        assert s.server.batched == request.param
        yield s


def header(out: str) -> tuple[str, str]:
    m = re.search(r"status: (\w+).*\n;; flags: ([a-z ]*);", out)
    assert m, out
    return m.group(1), m.group(2)


def answers(out: str) -> list[str]:
    """dig's answer section lines, whitespace collapsed."""
    part = out.split(";; ANSWER SECTION:\n", 1)
    if len(part) < 2:
        return []
    lines = part[1].split("\n\n", 1)[0].splitlines()
    return [" ".join(line.split()) for line in lines]


@pytest.mark.parametrize("options", [(), ("+noedns",), ("+tcp",), ("+tcp", "+noedns")])
def test_dig_gets_the_vip_over_udp_and_tcp(server: OurServer, options: tuple[str, ...]) -> None:
    out = dig(server.port, "web.shop.svc.k8s.example.com", "A", *options)
    status, flags = header(out)
    assert status == "NOERROR" and "aa" in flags.split()
    assert answers(out) == ["web.shop.svc.k8s.example.com. 5 IN A 198.18.100.0"]
    assert ("OPT PSEUDOSECTION" in out) == ("+noedns" not in options)
    assert ("(TCP)" in out) == ("+tcp" in options)


def test_dig_mixed_case_is_echoed_exactly_like_knot(server: OurServer, tmp_path: Path) -> None:
    name = "WeB.ShOp.sVc.K8S.example.COM"
    ours = dig(server.port, name, "A")
    with knotd(tmp_path, DNS, cluster_records(), server.serial) as knot_port:
        theirs = dig(knot_port, name, "A")
    assert answers(ours) == [f"{name}. 5 IN A 198.18.100.0"]
    assert answers(ours) == answers(theirs)
    assert f";{name}." in ours  # the question section too


def test_truncated_udp_answer_falls_back_to_tcp(server: OurServer) -> None:
    out = dig(server.port, "big.shop.svc.cluster.local", "A", "+ignore")
    assert "tc" in header(out)[1].split() and answers(out) == []
    before = server.server.stats()
    full = dig(server.port, "big.shop.svc.cluster.local", "A")
    after = server.server.stats()
    # dig saw tc over UDP and asked again over TCP (our counters, not dig's wording)
    assert (after.udp - before.udp, after.tcp - before.tcp) == (1, 1)
    assert len(answers(full)) == 200
    assert "tc" not in header(full)[1].split()


def test_edns_buffer_size_is_honoured(server: OurServer) -> None:
    # 50 A records: ~850 bytes, more than 512, less than our 1232
    def ask(*options: str) -> tuple[set[str], int]:
        out = dig(server.port, "mid.shop.svc.cluster.local", "A", "+ignore", *options)
        size = re.search(r"MSG SIZE  rcvd: (\d+)", out)
        assert size, out
        return set(header(out)[1].split()), int(size.group(1))

    flags, size = ask("+bufsize=1232")
    assert "tc" not in flags and 512 < size <= 1232
    flags, size = ask("+bufsize=4096")
    assert "tc" not in flags and 512 < size <= 1232
    for small in (("+bufsize=512",), ("+noedns",), ("+bufsize=100",)):  # < 512 means 512
        flags, size = ask(*small)
        assert "tc" in flags and size <= 512, small


def test_refused_outside_our_zones_and_nxdomain_inside(server: OurServer) -> None:
    status, flags = header(dig(server.port, "example.org", "A"))
    assert status == "REFUSED" and "aa" not in flags.split()
    out = dig(server.port, "nope.shop.svc.cluster.local", "AAAA")
    assert header(out)[0] == "NXDOMAIN"
    assert re.search(r"AUTHORITY SECTION:\ncluster\.local\.\s+5\s+IN\s+SOA\s", out), out


def test_zone_swap_while_serving_and_counters() -> None:
    first = (Record("a.shop.svc.cluster.local", "A", "198.18.0.1", 5),)
    with our_server(DNS, first) as s:
        before = s.server.stats()
        assert kdig(s.port, [("a.shop.svc.cluster.local", "A")])[0]["answerRRs"][0]["rdataA"] == (
            "198.18.0.1"
        )
        second = (Record("a.shop.svc.cluster.local", "A", "198.18.0.2", 5),)
        s.call(s.server.update(second))
        reply = kdig(s.port, [("a.shop.svc.cluster.local", "A"), ("b.shop.svc.cluster.local", "A")])
        assert reply[0]["answerRRs"][0]["rdataA"] == "198.18.0.2"
        assert reply[1]["RCODE"] == 3
        kdig(s.port, [("example.org", "A")], "+tcp")
        after = s.server.stats()
        assert after.serial > before.serial
        assert after.record_count == 1 + 4  # the A, SOA and NS at two apexes
        assert after.queries["NOERROR"] == 2
        assert after.queries["NXDOMAIN"] == 1
        assert after.queries["REFUSED"] == 1
        assert after.udp == 3 and after.tcp == 1
        same = s.call(s.server.update(second))  # unchanged: no new serial
        assert same.serial == after.serial


def test_cli_serves_a_records_file_and_prints_a_zonefile(tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    records.write_text(
        json.dumps([asdict(Record("web.shop.svc.cluster.local", "A", "198.18.0.7", 5))])
    )
    zonefile = subprocess.run(
        [*CLI, "zonefile", "--records", str(records), "--zone", "cluster.local", "cluster.local"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert zonefile.returncode == 0, zonefile.stderr
    assert "web.shop.svc.cluster.local. 5 IN A 198.18.0.7" in zonefile.stdout
    proc = subprocess.Popen(
        [*CLI, "serve", "--records", str(records), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        out = dig(port, "web.shop.svc.cluster.local", "A")
        assert answers(out) == ["web.shop.svc.cluster.local. 5 IN A 198.18.0.7"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    bad = subprocess.run(
        [*CLI, "serve", "--records", "/nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "/nope" in bad.stderr


def test_live_fuzz_every_reply_parses_and_the_server_survives(server: OurServer) -> None:
    rng = random.Random(7)
    seeds = [
        dns.message.make_query(n, t, use_edns=e).to_wire()
        for n, t, e in [
            ("web.shop.svc.cluster.local", "A", False),
            ("_http._tcp.big.shop.svc.cluster.local", "SRV", 0),
            ("x.apps.k8s.example.com", "A", 0),
            ("example.org", "NS", False),
        ]
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    sent = replied = 0
    try:
        for i in range(1500):
            if i % 3 == 0:
                data = rng.randbytes(rng.randrange(0, 80))
            else:
                buf = bytearray(rng.choice(seeds))
                for _ in range(rng.randrange(1, 5)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
                data = bytes(buf[: rng.randrange(12, len(buf) + 1)])
            sock.sendto(data, ("127.0.0.1", server.port))
            sent += 1
            if len(data) >= 12 and not data[2] & 0x80:
                reply = sock.recv(65535)
                m = dns.message.from_wire(reply)
                assert m.id == struct.unpack(">H", data[:2])[0]
                replied += 1
    finally:
        sock.close()
    assert replied > 500
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as tcp:
        tcp.sendall(struct.pack(">H", 5) + b"\x00\x01\x02\x03\x04")  # runt: no reply, closed
        assert tcp.recv(10) == b""
    status, _ = header(dig(server.port, "web.shop.svc.cluster.local", "A"))
    assert status == "NOERROR"  # still serving


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = DnsServer(DnsConfig(listen=(("127.0.0.1", port),)))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}/udp"):
            asyncio.run(server.start())
        records = tmp_path / "records.json"
        records.write_text("[]")
        cli = subprocess.run(
            [*CLI, "serve", "--records", str(records), "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=60,
        )
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines() == [
        f"appliance dns: cannot listen on 127.0.0.1:{port}/udp: {os.strerror(errno.EADDRINUSE)}"
    ]


def test_cli_plans_the_example_cluster_into_a_zonefile(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "zonefile", "--config", "examples/appliance.yaml", "cluster.local"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["$ORIGIN cluster.local.", "$TTL 5"]
    assert any(" IN SOA ns.cluster.local. hostmaster.cluster.local. " in x for x in lines)
    assert any(".svc.cluster.local. 5 IN A 198.18." in x for x in lines)  # planned Services
    bad = tmp_path / "bad.yaml"
    bad.write_text("dns:\n  ttl: -1\n")
    out = subprocess.run(
        [*CLI, "zonefile", "--config", str(bad), "cluster.local"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "dns.ttl" in out.stderr


def test_tcp_pipelined_queries_on_one_connection(server: OurServer) -> None:
    names = ["web.shop.svc.cluster.local", "big.shop.svc.cluster.local", "nope.cluster.local"]
    wires = [dns.message.make_query(n, "A", id=i + 1).to_wire() for i, n in enumerate(names)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as tcp:
        tcp.sendall(b"".join(struct.pack(">H", len(w)) + w for w in wires))  # all at once
        stream = tcp.makefile("rb")
        replies = []
        for _ in wires:
            (length,) = struct.unpack(">H", stream.read(2))
            replies.append(dns.message.from_wire(stream.read(length)))
    assert [m.id for m in replies] == [1, 2, 3]
    assert [sum(len(r) for r in m.answer) for m in replies] == [1, 200, 0]
    assert replies[2].rcode() == dns.rcode.NXDOMAIN


def test_stop_closes_idle_tcp_clients_at_once() -> None:
    s = OurServer(DNS, cluster_records())
    tcp = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    try:
        wire = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
        tcp.sendall(struct.pack(">H", len(wire)) + wire)
        stream = tcp.makefile("rb")
        (length,) = struct.unpack(">H", stream.read(2))
        assert dns.message.from_wire(stream.read(length)).answer  # answered: now idle
        s.close()  # must not wait the 10 s idle timeout
        assert stream.read(1) == b""
    finally:
        tcp.close()


def test_two_udp_workers_share_the_port() -> None:
    records = [Record("web.shop.svc.cluster.local", "A", "198.18.0.1", 5)]
    loop_server = OurServer(DNS, records, workers=2)
    try:
        assert len(loop_server.server._udp) == 2  # two sockets, SO_REUSEPORT
        wire = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
        for _ in range(20):  # a new source port each time: the kernel spreads them
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(5)
                c.sendto(wire, ("127.0.0.1", loop_server.port))
                assert dns.message.from_wire(c.recv(4096)).answer
        per_socket = [sum(counts) for counts in loop_server.server._udp_counts]
        assert sum(per_socket) == 20 == loop_server.server.stats().udp
    finally:
        loop_server.close()


def test_ipv6_listen_answers_over_udp_and_tcp() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 sockets")
    cfg = DnsConfig(zones=("cluster.local",), listen=(("127.0.0.1", 0), ("::1", 0)))
    records = [Record("web.shop.svc.cluster.local", "AAAA", "fd00:198:18::1", 5)]
    s = OurServer(cfg, records)
    try:
        (_, port6) = s.server.addresses[1]
        for options in ((), ("+tcp",)):
            question = ["web.shop.svc.cluster.local", "AAAA", *options]
            out = subprocess.run(
                ["dig", "-p", str(port6), "@::1", "+norec", "+time=2", *question],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            assert answers(out) == ["web.shop.svc.cluster.local. 5 IN AAAA fd00:198:18::1"]
    finally:
        s.close()

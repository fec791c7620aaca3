"""The responder on the wire: header rules, EDNS (RFC 6891), truncation, error rcodes,
and fuzzing (no exception escapes, every reply parses). dnspython is the observer."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import DnsConfig
from appliance.dns.responder import DROPPED, Responder
from appliance.dns.zone import build_zone
from appliance.model import Record

CFG = DnsConfig(zones=("cluster.local",))
PODS = tuple(Record("big.shop.svc.cluster.local", "A", f"198.18.1.{i}", 5) for i in range(1, 201))
SRV_MANY = tuple(
    Record(
        "_http._tcp.many.shop.svc.cluster.local",
        "SRV",
        f"pod-{i:02}.many.shop.svc.cluster.local",
        5,
        port=80,
    )
    for i in range(6)
) + tuple(
    Record(f"pod-{i:02}.many.shop.svc.cluster.local", "AAAA", f"fd00:198:18::{i + 1}", 5)
    for i in range(6)
)
RECORDS = (
    Record("web.shop.svc.cluster.local", "A", "198.18.0.10", 5),
    *PODS,
    *SRV_MANY,
)
RESPONDER = Responder(build_zone(RECORDS, CFG, 1))


def query(name: str, rtype: str = "A", **kw) -> bytes:
    q = dns.message.make_query(name, rtype, **kw)
    return q.to_wire()


def answer(wire: bytes, udp: bool = True) -> dns.message.Message:
    reply, _ = RESPONDER.reply(wire, udp)
    assert reply is not None
    return dns.message.from_wire(reply)


def test_reply_echoes_id_case_and_rd() -> None:
    wire = query("WeB.ShOp.svc.cluster.LOCAL", use_edns=False)
    m = answer(wire)
    assert m.id == struct.unpack(">H", wire[:2])[0]
    assert m.flags & dns.flags.RD  # copied (RFC 1035 4.1.1)
    assert not m.flags & dns.flags.RA  # not a resolver
    assert str(m.question[0].name) == "WeB.ShOp.svc.cluster.LOCAL."
    assert str(m.answer[0].name) == "WeB.ShOp.svc.cluster.LOCAL."
    no_rd = bytearray(wire)
    no_rd[2] &= 0xFE
    assert not answer(bytes(no_rd)).flags & dns.flags.RD


def test_repeated_question_gets_its_own_id_from_the_reply_cache() -> None:
    responder = Responder(build_zone(RECORDS, CFG, 1))
    wire = bytearray(query("web.shop.svc.cluster.local", use_edns=False))
    replies = []
    for qid in (1, 2, 0xFFFF):
        wire[:2] = qid.to_bytes(2, "big")
        reply, rcode = responder.reply(bytes(wire))
        assert reply is not None and rcode == 0
        replies.append(reply)
    assert [int.from_bytes(r[:2], "big") for r in replies] == [1, 2, 0xFFFF]
    assert replies[0][2:] == replies[1][2:] == replies[2][2:]
    moved = (Record("web.shop.svc.cluster.local", "A", "198.18.0.99", 5),)
    swapped, _ = Responder(build_zone(moved, CFG, 2)).reply(bytes(wire))  # a new zone
    assert swapped is not None
    assert [str(r) for r in dns.message.from_wire(swapped).answer] == [
        "web.shop.svc.cluster.local. 5 IN A 198.18.0.99"
    ]


def test_fast_and_slow_paths_agree() -> None:
    for name, rtype, edns in (
        ("web.shop.svc.cluster.local", "A", False),
        ("WEB.shop.svc.cluster.local", "AAAA", True),
        ("big.shop.svc.cluster.local", "A", True),
        ("_http._tcp.many.shop.svc.cluster.local", "SRV", False),
    ):
        wire = query(name, rtype, use_edns=0 if edns else False)
        for udp in (True, False):
            assert RESPONDER.reply(wire, udp) == RESPONDER._slow(wire, udp)


def test_edns_opt_is_echoed_with_our_size_and_do_copied() -> None:
    plain = answer(query("web.shop.svc.cluster.local", use_edns=False))
    assert plain.edns == -1
    m = answer(query("web.shop.svc.cluster.local", use_edns=0, payload=4096, want_dnssec=True))
    assert m.edns == 0 and m.payload == 1232
    assert m.ednsflags & dns.flags.DO
    cookie = dns.edns.GenericOption(10, b"\x01" * 8)
    with_option = answer(query("web.shop.svc.cluster.local", use_edns=0, options=[cookie]))
    assert with_option.rcode() == dns.rcode.NOERROR and with_option.edns == 0
    assert not with_option.ednsflags & dns.flags.DO


def test_large_answer_truncates_over_udp_and_fits_over_tcp() -> None:
    for kw in ({"use_edns": False}, {"use_edns": 0, "payload": 4096}):
        m = answer(query("big.shop.svc.cluster.local", **kw))
        assert m.flags & dns.flags.TC and not m.answer
        assert len(RESPONDER.reply(query("big.shop.svc.cluster.local", **kw))[0] or b"") <= (
            512 if kw["use_edns"] is False else 1232
        )
    full = answer(query("big.shop.svc.cluster.local", use_edns=False), udp=False)
    assert not full.flags & dns.flags.TC
    assert sum(len(r) for r in full.answer) == 200


def test_additional_section_is_dropped_before_truncating() -> None:
    wire = query("_http._tcp.many.shop.svc.cluster.local", "SRV", use_edns=False)
    small = answer(wire)
    assert not small.flags & dns.flags.TC  # RFC 2181 9: no TC for a missing additional
    assert sum(len(r) for r in small.answer) == 6 and not small.additional
    big = answer(query("_http._tcp.many.shop.svc.cluster.local", "SRV", use_edns=0))
    assert sum(len(r) for r in big.additional) == 6


def test_error_rcodes() -> None:
    ok = query("web.shop.svc.cluster.local", use_edns=False)
    two_questions = ok[:5] + b"\x02" + ok[6:] + ok[12:]
    assert answer(two_questions).rcode() == dns.rcode.FORMERR
    assert answer(ok + b"\x00").rcode() == dns.rcode.FORMERR  # trailing garbage
    notify = bytearray(ok)
    notify[2] = (notify[2] & 0x87) | (dns.opcode.NOTIFY << 3)
    m = answer(bytes(notify))
    assert m.rcode() == dns.rcode.NOTIMP and m.opcode() == dns.opcode.NOTIFY
    badvers = dns.message.make_query("web.shop.svc.cluster.local", "A", use_edns=1).to_wire()
    m = answer(badvers)
    assert m.rcode() == dns.rcode.BADVERS and m.edns == 0
    chaos = dns.message.make_query("version.bind", "TXT", "CH").to_wire()
    assert answer(chaos).rcode() == dns.rcode.REFUSED
    opt_twice = ok[:11] + b"\x02" + ok[12:] + (b"\x00\x00\x29\x04\xd0" + bytes(6)) * 2
    assert answer(opt_twice).rcode() == dns.rcode.FORMERR
    pointer = ok[:12] + b"\xc0\x0c" + ok[-4:]
    assert answer(pointer).rcode() == dns.rcode.FORMERR
    axfr = answer(query("cluster.local", "AXFR", use_edns=False), udp=False)
    assert axfr.rcode() == dns.rcode.REFUSED


def test_responses_and_runts_get_no_reply() -> None:
    ok = query("web.shop.svc.cluster.local", use_edns=False)
    response = bytearray(ok)
    response[2] |= 0x80
    assert RESPONDER.reply(bytes(response)) == (None, DROPPED)
    assert RESPONDER.reply(ok[:11]) == (None, DROPPED)
    assert RESPONDER.reply(b"") == (None, DROPPED)


def check_reply(data: bytes) -> None:
    for udp in (True, False):
        reply, rcode = RESPONDER.reply(data, udp)
        if reply is None:
            assert rcode == DROPPED
            assert len(data) < 12 or data[2] & 0x80
            continue
        m = dns.message.from_wire(reply)  # well-formed, or this raises
        assert m.id == struct.unpack(">H", data[:2])[0]
        assert m.flags & dns.flags.QR
        assert len(reply) <= (1232 if udp else 65535)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_reply(data)


SEEDS = [
    query("web.shop.svc.cluster.local", use_edns=False),
    query("big.shop.svc.cluster.local", use_edns=0),
    query("_http._tcp.many.shop.svc.cluster.local", "SRV", use_edns=0, want_dnssec=True),
    query("nope.cluster.local", "AAAA", use_edns=False),
    query("example.org", "ANY", use_edns=False),
]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 3),
    st.binary(max_size=20),
)
def test_fuzz_mutated_queries(seed: bytes, flips, cut: int, tail: bytes) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    mutated = bytes(data[: len(data) - cut]) + (tail if cut == 0 else b"")
    check_reply(mutated)

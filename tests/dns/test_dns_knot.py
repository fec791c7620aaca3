"""Differential test: the same records served by knotd (from our rendered zone files) and
by us, the same corpus of questions asked of both with kdig; rcode, AA, TC and the
answer, authority and additional sections must agree."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import dns.message
import pytest

from tests.dns.conftest import DNS, cluster_records, needs_tools
from tests.dns.peers import kdig, knotd, our_server

pytestmark = needs_tools

TYPES = ("A", "AAAA", "CNAME", "SRV", "SOA", "NS", "TXT", "MX", "ANY", "NSEC", "RRSIG")


def mixed_case(name: str) -> str:
    return "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(name))


def corpus(records) -> list[tuple[str, str]]:
    names = sorted({r.name for r in records if r.name[0].isalpha() or r.name[0] in "_*"})
    names = [n for n in names if not n[0].isdigit()][:60]
    questions: list[tuple[str, str]] = []
    for name in names:
        questions += [(name, t) for t in TYPES]
    for apex in DNS.zones:
        questions += [(apex, t) for t in TYPES]
        questions += [
            (f"missing.{apex}", "A"),
            (f"svc.{apex}", "A"),  # an empty non-terminal
            (f"shop.svc.{apex}", "AAAA"),
            (f"nope.shop.svc.{apex}", "SRV"),
            (f"x.web.shop.svc.{apex}", "A"),  # below an existing name
            (mixed_case(f"web.shop.svc.{apex}"), "A"),
            (mixed_case(f"_http._tcp.web.shop.svc.{apex}"), "SRV"),
            (mixed_case(f"alias.shop.svc.{apex}"), "AAAA"),
        ]
    questions += [
        ("anything.apps.k8s.example.com", "A"),
        ("a.b.apps.k8s.example.com", "AAAA"),
        ("Deep.Er.Apps.K8s.Example.Com", "A"),
        ("x.*.apps.k8s.example.com", "A"),
        ("apps.k8s.example.com", "A"),
        ("example.org", "A"),
        ("k8s.example.org", "SOA"),
        ("local", "NS"),
    ]
    return list({(n.lower(), t): (n, t) for n, t in questions}.values())


def section(reply: dict[str, Any], key: str) -> list[tuple[str, ...]]:
    out = []
    for rr in reply.get(key, []):
        data = next((v for k, v in rr.items() if k.startswith("rdata")), rr.get("RDATAHEX"))
        out.append((rr["NAME"].lower(), rr["TYPEname"], str(rr["TTL"]), str(data).lower()))
    return sorted(out)


def summary(reply: dict[str, Any]) -> dict[str, Any]:
    return {
        "rcode": reply.get("RCODE"),
        "AA": reply.get("AA"),
        "TC": reply.get("TC"),
        "qname": reply.get("QNAME"),  # the question echoed, case and all
        "answer": section(reply, "answerRRs"),
        "authority": section(reply, "authorityRRs"),
        "additional": section(reply, "additionalRRs"),
    }


@pytest.mark.parametrize(
    "transport",
    [
        ("+noedns",),
        ("+edns", "+bufsize=1232"),
        ("+tcp",),
        ("+noedns", "+ignore"),
        ("+dnssec", "+bufsize=512", "+ignore"),
    ],
    ids=["udp", "udp-edns", "tcp", "udp-no-fallback", "udp-do-512"],
)
def test_same_answers_as_knot(tmp_path: Path, transport: tuple[str, ...]) -> None:
    records = cluster_records()
    questions = corpus(records)
    assert len(questions) > 300
    with our_server(DNS, records) as ours, knotd(tmp_path, DNS, records, ours.serial) as knot_port:
        theirs = kdig(knot_port, questions, *transport)
        mine = kdig(ours.port, questions, *transport)
    assert all(r["RCODE"] is not None for r in theirs), "knotd did not answer everything"
    differences = []
    for q, t, m in zip(questions, theirs, mine, strict=True):
        if summary(t) != summary(m):
            differences.append(f"{q}: knot {summary(t)}\n{' ' * len(str(q))}  ours {summary(m)}")
    assert not differences, f"{len(differences)} differ:\n" + "\n".join(differences[:10])


def test_large_headless_answer_truncates_like_knot(tmp_path: Path) -> None:
    records = cluster_records()
    q = [("big.shop.svc.cluster.local", "A"), ("_http._tcp.big.shop.svc.cluster.local", "SRV")]
    with our_server(DNS, records) as ours, knotd(tmp_path, DNS, records, ours.serial) as knot_port:
        for options in (("+noedns", "+ignore"), ("+tcp",), ("+noedns",)):
            theirs = kdig(knot_port, q, *options)
            mine = kdig(ours.port, q, *options)
            assert [summary(r) for r in mine] == [summary(r) for r in theirs], options
    assert theirs[0]["ANCOUNT"] == 200  # kdig fell back to TCP on TC, for both


def random_corpus(records, n: int = 400, seed: int = 5) -> list[tuple[str, str]]:
    """Names spliced from the zone's labels and some strangers, in random case, asking
    for types we hold and types we never do."""
    rng = random.Random(seed)
    names = sorted({r.name for r in records})
    labels = sorted({label for name in names for label in name.split(".")})
    labels += ["zz", "*", "x-", "a" * 63, "xn--bcher-kva", "_tcp"]  # no leading "-": kdig
    types = [*TYPES, "DS", "PTR", "CAA", "HTTPS", "SVCB", "TYPE999", "DNSKEY", "NSEC"]
    out: dict[tuple[str, str], tuple[str, str]] = {}
    while len(out) < n:
        base = rng.choice(names).split(".")
        roll = rng.random()
        if roll < 0.3:
            base = [rng.choice(labels), *base]  # below an existing name
        elif roll < 0.5:
            base[rng.randrange(len(base) - 2)] = rng.choice(labels)  # a sibling
        elif roll < 0.6:
            base = base[rng.randrange(1, len(base)) :]  # an ancestor
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in ".".join(base))
        rtype = rng.choice(types)
        out.setdefault((name.lower(), rtype), (name, rtype))
    return list(out.values())


def test_random_questions_same_as_knot(tmp_path: Path) -> None:
    records = cluster_records()
    questions = random_corpus(records)
    with our_server(DNS, records) as ours, knotd(tmp_path, DNS, records, ours.serial) as kport:
        theirs = kdig(kport, questions, "+edns")
        mine = kdig(ours.port, questions, "+edns")
    assert sum(r["RCODE"] is not None for r in theirs) == len(questions)
    differences = [
        f"{q}: knot {summary(t)}\n  ours {summary(m)}"
        for q, t, m in zip(questions, theirs, mine, strict=True)
        if summary(t) != summary(m)
    ]
    assert not differences, f"{len(differences)} differ:\n" + "\n".join(differences[:10])


def raw_cases() -> dict[str, bytes]:
    """Odd and malformed queries on which knotd and we agree byte for byte."""
    ok = dns.message.make_query("web.shop.svc.cluster.local", "A", use_edns=False).to_wire()
    edns = dns.message.make_query("web.shop.svc.cluster.local", "A", use_edns=0).to_wire()
    opt = b"\x00\x00\x29\x04\xd0" + bytes(6)
    return {
        "no question": ok[:4] + b"\x00\x00" + ok[6:12],
        "an answer in a query": ok[:7] + b"\x01" + ok[8:],
        "trailing bytes": ok + b"\x00",
        "OPT twice": ok[:11] + b"\x02" + ok[12:] + opt * 2,
        "EDNS version 1": dns.message.make_query(
            "web.shop.svc.cluster.local", "A", use_edns=1
        ).to_wire(),
        "bad EDNS option length": edns[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x08",
        "class ANY": dns.message.make_query("web.shop.svc.cluster.local", "A", "ANY").to_wire(),
        "qtype OPT": ok[:-4] + b"\x00\x29\x00\x01",
        "TC set in the query": ok[:2] + bytes([ok[2] | 2]) + ok[3:],
        "Z bit set": ok[:3] + bytes([ok[3] | 0x40]) + ok[4:],
    }


def udp_ask(port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def test_odd_queries_get_the_same_bytes_as_from_knot(tmp_path: Path) -> None:
    records = cluster_records()
    with our_server(DNS, records) as ours, knotd(tmp_path, DNS, records, ours.serial) as kport:
        for what, data in raw_cases().items():
            theirs = udp_ask(kport, data)
            assert theirs is not None, what
            assert udp_ask(ours.port, data) == theirs, what

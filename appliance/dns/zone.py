"""Planned records -> an immutable zone whose answers are precomputed wire bytes.

A `Zone` covers every configured apex (SOA and NS added at each). Each existing
(name, type) pair, and A/AAAA where a CNAME leads, is answered ahead of time: `Answer`
holds the header flags and counts and the sections after the question, packed by dnslib
with names compressed against the question at offset 12. A reply is then the query's ID
and question (same length in any case, so the pointers stay right) around those bytes.
Anything else (NODATA, NXDOMAIN, wildcard synthesis) goes through `Zone.resolve` on first
demand, and the responder caches it.

Resolution follows RFC 1034 4.3.2 with RFC 4592 wildcards, RFC 2308 negative answers
(SOA in the authority section) and RFC 6604 rcodes for CNAME chains; CNAMEs are chased
only inside the zone that holds them, like knot.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CNAME,
    NS,
    RR,
    SOA,
    SRV,
    A,
    DNSBuffer,
    DNSLabel,
)

from appliance.config import DnsConfig
from appliance.model import Record

Wire = Any
"""A dnslib value (RR or RDATA); dnslib has no type hints."""
Name = tuple[bytes, ...]
"""A domain name as lower-case labels, leftmost first; the root is ()."""

T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_SRV, T_OPT = 1, 2, 5, 6, 28, 33, 41
T_RRSIG, T_NSEC = 46, 47
T_IXFR, T_AXFR, T_ANY = 251, 252, 255
CLASS_IN, CLASS_ANY = 1, 255
TYPE_CODES = {"A": T_A, "NS": T_NS, "CNAME": T_CNAME, "SOA": T_SOA, "AAAA": T_AAAA, "SRV": T_SRV}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
EDNS_SIZE = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)
EDE_NOT_AUTHORITATIVE = 20  # RFC 8914 Extended DNS Error, as knot adds to REFUSED
MAX_CHAIN = 8  # CNAME hops we follow before answering with what we have
SOA_TIMERS = (3600, 600, 86400)  # refresh, retry, expire: no secondaries pull from us


@dataclass(frozen=True, slots=True)
class RRset:
    rtype: int
    ttl: int
    rdatas: tuple[Wire, ...]  # dnslib RD values, in canonical (wire) order


@dataclass(frozen=True, slots=True)
class Answer:
    """One response template: everything but the ID, the RD bit, the question and OPT.

    `heads[rd]` and `edns_heads[rd]` are the 10 header bytes after the ID (flags and
    the four counts; ARCOUNT counts the OPT we append). `trimmed_*` drop the additional
    section when the whole does not fit (no TC needed for that, RFC 2181 9); `tc_*` is
    the empty reply with TC set when even the answer does not fit."""

    rcode: int
    body: bytes
    heads: tuple[bytes, bytes]
    edns_heads: tuple[bytes, bytes]
    trimmed_body: bytes
    trimmed_heads: tuple[bytes, bytes]
    trimmed_edns_heads: tuple[bytes, bytes]
    tc_heads: tuple[bytes, bytes]
    tc_edns_heads: tuple[bytes, bytes]
    opts: tuple[bytes, bytes]  # the OPT RR appended for EDNS queries: DO clear, DO set


def opt_rr(do: bool, ext_rcode: int = 0, ede: int | None = None) -> bytes:
    """Our OPT pseudo-RR (RFC 6891 6.1.2), optionally with an Extended DNS Error."""
    options = b"" if ede is None else struct.pack(">HHH", 15, 2, ede)
    flags = 0x8000 if do else 0
    return struct.pack(">BHHBBHH", 0, T_OPT, EDNS_SIZE, ext_rcode, 0, flags, len(options)) + (
        options
    )


@functools.lru_cache(maxsize=4096)  # few distinct counts: most answers share theirs
def _heads(flags: int, rcode: int, an: int, ns: int, ar: int) -> tuple[tuple[bytes, bytes], ...]:
    """(plain, with OPT) x (RD clear, RD set)."""
    out = []
    for extra in (0, 1):
        pair = tuple(
            struct.pack(">BBHHHH", flags | rd, rcode & 0xF, 1, an, ns, ar + extra) for rd in (0, 1)
        )
        out.append((pair[0], pair[1]))
    return tuple(out)


def make_answer(
    qname: Name,
    qtype: int,
    rcode: int,
    answer: Sequence[Wire] = (),
    authority: Sequence[Wire] = (),
    additional: Sequence[Wire] = (),
    authoritative: bool = True,
    ede: int | None = None,
) -> Answer:
    """Pack sections after a (lower-case) question, compressing against it."""
    buf = DNSBuffer()
    buf.append(bytes(12))
    buf.encode_name(DNSLabel(list(qname)))
    buf.pack("!HH", qtype, CLASS_IN)
    start = buf.offset
    for rr in (*answer, *authority):
        rr.pack(buf)
    middle = buf.offset
    for rr in additional:
        rr.pack(buf)
    data = bytes(buf.data)
    body = data[start:]
    trimmed = data[start:middle] if additional else body  # one copy when they are equal
    flags = 0x84 if authoritative else 0x80  # QR, AA
    an, ns, ar = len(answer), len(authority), len(additional)
    heads, edns_heads = _heads(flags, rcode, an, ns, ar)
    t_heads, t_edns_heads = _heads(flags, rcode, an, ns, 0)
    tc_heads, tc_edns_heads = _heads(flags | 0x02, rcode, 0, 0, 0)
    return Answer(
        rcode=rcode,
        body=body,
        heads=heads,
        edns_heads=edns_heads,
        trimmed_body=trimmed,
        trimmed_heads=t_heads,
        trimmed_edns_heads=t_edns_heads,
        tc_heads=tc_heads,
        tc_edns_heads=tc_edns_heads,
        opts=(opt_rr(False, ede=ede), opt_rr(True, ede=ede)),
    )


def name_of(text: str) -> Name:
    text = text.lower().rstrip(".")
    return tuple(label.encode() for label in text.split(".")) if text else ()


def text_of(name: Name) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in name)


def wire_of(name: Name) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in name) + b"\x00"


def _is_under(name: Name, apex: Name) -> bool:
    return len(name) >= len(apex) and name[len(name) - len(apex) :] == apex


def _check_name(name: Name) -> str | None:
    if not name or any(not label or len(label) > 63 for label in name):
        return "not a valid domain name"
    if len(wire_of(name)) > 255:
        return "longer than 255 octets"
    if any(b"*" in label for label in name[1:]) or (b"*" in name[0] and name[0] != b"*"):
        return "a '*' may only be the whole leftmost label"
    return None


def _rdata(record: Record) -> tuple[int, Wire]:
    """The dnslib RDATA of a planned record; ValueError with a reason if it is bad."""
    rtype = TYPE_CODES.get(record.rtype)
    if record.rtype in ("A", "AAAA"):
        addr = ipaddress.ip_address(record.data)  # raises ValueError
        if (addr.version == 4) != (record.rtype == "A"):
            raise ValueError(f"{record.data} is not an {record.rtype} address")
        return (T_A, A(str(addr))) if addr.version == 4 else (T_AAAA, AAAA(str(addr)))
    if record.rtype in ("CNAME", "SRV"):
        target = name_of(record.data)
        problem = _check_name(target) if target else None
        if problem or b"*" in b"".join(target):
            raise ValueError(f"target {record.data!r}: {problem or 'not a valid domain name'}")
        label = DNSLabel(list(target))
        if record.rtype == "CNAME":
            return T_CNAME, CNAME(label)
        for value, bits in ((record.priority, 16), (record.weight, 16), (record.port, 16)):
            if not 0 <= value < 1 << bits:
                raise ValueError(f"SRV field {value} out of range")
        return T_SRV, SRV(record.priority, record.weight, record.port, label)
    raise ValueError(f"type {record.rtype!r} is not served (rtype {rtype})")


def _rdata_key(rdata: Wire) -> bytes:
    buf = DNSBuffer()
    rdata.pack(buf)
    return bytes(buf.data)


@dataclass(frozen=True, slots=True)
class Zone:
    """Everything we answer for, immutable; built by `build_zone`, swapped whole."""

    apexes: tuple[Name, ...]  # longest first, so the first suffix match is the closest zone
    serial: int
    ttl: int
    rrsets: Mapping[Name, Mapping[int, RRset]]
    names: frozenset[Name]  # owner names and the empty non-terminals above them
    answers: Mapping[bytes, Answer]  # lower-case question wire (name, type, class IN)
    record_count: int  # resource records served, SOA and NS included
    problems: tuple[str, ...] = ()
    outside: int = 0  # planned records no zone covers (not served)
    refused: Answer = field(
        default_factory=lambda: make_answer(
            (), 0, REFUSED, authoritative=False, ede=EDE_NOT_AUTHORITATIVE
        )
    )

    def apex_of(self, name: Name) -> Name | None:
        for apex in self.apexes:
            if _is_under(name, apex):
                return apex
        return None

    def _soa(self, apex: Name) -> Wire:
        rrset = self.rrsets[apex][T_SOA]
        return RR(DNSLabel(list(apex)), T_SOA, CLASS_IN, rrset.ttl, rrset.rdatas[0])

    def _node(self, name: Name, apex: Name) -> Mapping[int, RRset] | None:
        """The RRsets answering for `name` (exact, else its RFC 4592 wildcard); None if
        the name does not exist. An empty non-terminal exists with no RRsets."""
        if name in self.names:
            return self.rrsets.get(name, {})
        encloser = name[1:]
        while len(encloser) > len(apex) and encloser not in self.names:
            encloser = encloser[1:]
        return self.rrsets.get((b"*", *encloser))

    def _additional(self, targets: Iterable[Name], apex: Name) -> list[Wire]:
        out: list[Wire] = []
        for target in dict.fromkeys(targets):
            if not _is_under(target, apex):
                continue
            node = self._node(target, apex) or {}
            for rtype in (T_A, T_AAAA):
                rrset = node.get(rtype)
                if rrset is not None:
                    out.extend(_rrs(target, rrset))
        return out

    def resolve(self, qname: Name, qtype: int) -> Answer:
        """The answer for a lower-case question of class IN (RFC 1034 4.3.2)."""
        apex = self.apex_of(qname)
        if apex is None:
            return self.refused  # not an open resolver
        if qtype in (T_AXFR, T_IXFR):
            return make_answer(
                qname, qtype, REFUSED, authoritative=False
            )  # no transfers: nobody pulls from us
        answer: list[Wire] = []
        authority: list[Wire] = []
        additional: list[Wire] = []
        rcode = NOERROR
        name = qname
        seen = {name}
        for _ in range(MAX_CHAIN + 1):
            node = self._node(name, apex)
            if node is None:
                rcode = NXDOMAIN
                authority.append(self._soa(apex))
                break
            # RFC 8482: ANY gets one RRset, the lowest type, as knot picks it
            rrset = node[min(node)] if qtype == T_ANY and node else node.get(qtype)
            if rrset is not None:
                answer.extend(_rrs(name, rrset))
                if rrset.rtype in (T_SRV, T_NS):
                    targets = (
                        _name_of_label(rd.target if rrset.rtype == T_SRV else rd.label)
                        for rd in rrset.rdatas
                    )
                    additional.extend(self._additional(targets, apex))
                break
            if qtype == T_ANY:
                authority.append(self._soa(apex))  # an empty non-terminal
                break
            # RFC 4035 2.5: NSEC and RRSIG live beside a CNAME; asked for, never chased
            cname = None if qtype in (T_RRSIG, T_NSEC) else node.get(T_CNAME)
            if cname is None:
                authority.append(self._soa(apex))  # NODATA
                break
            answer.extend(_rrs(name, cname))
            target = _name_of_label(cname.rdatas[0].label)
            if target in seen or not _is_under(target, apex):
                break  # a loop, or out of our hands: the client follows it
            seen.add(target)
            name = target
        return make_answer(qname, qtype, rcode, answer, authority, additional)


def _name_of_label(label: Wire) -> Name:
    return tuple(part.lower() for part in label.label)


def _rrs(owner: Name, rrset: RRset) -> list[Wire]:
    label = DNSLabel(list(owner))
    return [RR(label, rrset.rtype, CLASS_IN, rrset.ttl, rd) for rd in rrset.rdatas]


def normalize_zones(zones: Iterable[str]) -> tuple[Name, ...]:
    apexes = {name_of(z) for z in zones}
    return tuple(sorted((a for a in apexes if a), key=len, reverse=True))


def next_serial(previous: int, now: float) -> int:
    """A serial that always grows (RFC 1982 in practice): the clock, or previous + 1."""
    return max(previous + 1, int(now)) & 0xFFFFFFFF


# name -> type -> rdata wire -> (ttl, rdata); the wire key dedupes and orders
_Grouped = dict[Name, dict[int, dict[bytes, tuple[int, Wire]]]]


def build_zone(records: Iterable[Record], config: DnsConfig, serial: int) -> Zone:
    """Records from plan() -> a Zone. Bad records are left out with a reason in
    `problems`; records outside every zone are counted in `outside`, not served."""
    apexes = normalize_zones(config.zones)
    problems: list[str] = []
    grouped, outside = _group(records, apexes, problems)
    _add_apex_records(grouped, apexes, config.ttl, serial)
    rrsets, count = _rrsets(grouped, problems)
    zone = Zone(
        apexes=apexes,
        serial=serial,
        ttl=config.ttl,
        rrsets=rrsets,
        names=_names(rrsets, apexes),
        answers={},
        record_count=count,
        problems=tuple(problems),
        outside=outside,
    )
    return replace(zone, answers=_precomputed(zone))


def _group(
    records: Iterable[Record], apexes: tuple[Name, ...], problems: list[str]
) -> tuple[_Grouped, int]:
    """The good records inside the zones, grouped; and how many fell outside them."""
    outside = 0
    grouped: _Grouped = {}
    for record in records:
        name = name_of(record.name)
        why = _check_name(name)
        where = f"{record.owner}: " if record.owner else ""
        if why:
            problems.append(f"{where}{record.name!r}: {why}")
            continue
        apex = next((a for a in apexes if _is_under(name, a)), None)
        if apex is None:
            outside += 1
            continue
        try:
            rtype, rdata = _rdata(record)
        except ValueError as e:
            problems.append(f"{where}{record.rtype} {record.name}: {e}")
            continue
        ttl = max(0, min(record.ttl, 2**31 - 1))
        slot = grouped.setdefault(name, {}).setdefault(rtype, {})
        key = _rdata_key(rdata)
        if key in slot:
            ttl = min(ttl, slot[key][0])
        slot[key] = (ttl, rdata)
    return grouped, outside


def _add_apex_records(grouped: _Grouped, apexes: tuple[Name, ...], ttl: int, serial: int) -> None:
    """The SOA and NS at every apex, whatever the records say there."""
    for apex in apexes:
        node = grouped.setdefault(apex, {})
        ns = (b"ns", *apex)
        mname, rname = DNSLabel(list(ns)), DNSLabel([b"hostmaster", *apex])
        soa = SOA(mname, rname, (serial & 0xFFFFFFFF, *SOA_TIMERS, ttl))
        node[T_SOA] = {b"": (ttl, soa)}
        node[T_NS] = {b"": (ttl, NS(mname))}


def _rrsets(grouped: _Grouped, problems: list[str]) -> tuple[dict[Name, dict[int, RRset]], int]:
    """The grouped data as RRsets, and how many records they hold."""
    rrsets: dict[Name, dict[int, RRset]] = {}
    count = 0
    for name, types in grouped.items():
        if T_CNAME in types and (len(types) > 1 or len(types[T_CNAME]) > 1):
            # RFC 1034 3.6.2: a CNAME stands alone; the other data wins (knot would
            # refuse the whole zone instead).
            keep = sorted(types[T_CNAME])[0]
            if len(types) > 1:
                problems.append(f"{text_of(name)}: CNAME beside other data, CNAME dropped")
                del types[T_CNAME]
            else:
                problems.append(f"{text_of(name)}: several CNAMEs, kept one")
                types[T_CNAME] = {keep: types[T_CNAME][keep]}
        out = rrsets.setdefault(name, {})
        for rtype, by_wire in types.items():
            items = [by_wire[k] for k in sorted(by_wire)]
            # RFC 2181 5.2: one TTL per RRset; the smallest is the safe one
            out[rtype] = RRset(rtype, min(t for t, _ in items), tuple(rd for _, rd in items))
            count += len(items)
    return rrsets, count


def _names(owners: Iterable[Name], apexes: tuple[Name, ...]) -> frozenset[Name]:
    """Every owner name and the empty non-terminals between it and its apex."""
    names: set[Name] = set()
    for name in owners:
        apex = next(a for a in apexes if _is_under(name, a))
        for cut in range(len(name) - len(apex) + 1):
            names.add(name[cut:])
    return frozenset(names)


def _precomputed(zone: Zone) -> dict[bytes, Answer]:
    """The answers made ahead of time, keyed by question wire (name, type, class IN)."""
    answers: dict[bytes, Answer] = {}
    for name, owned in zone.rrsets.items():
        wire = wire_of(name)
        # Every existing RRset, and what a CNAME leads to; negative answers are made on
        # first demand and cached by the responder (building them all doubles the time).
        for rtype in {*owned, T_A, T_AAAA} if T_CNAME in owned else owned:
            answers[wire + struct.pack(">HH", rtype, CLASS_IN)] = zone.resolve(name, rtype)
    return answers


def render_zonefile(zone: Zone, apex_text: str) -> str:
    """One of the zone's apexes in RFC 1035 master-file syntax (for knot, or a human)."""
    apex = name_of(apex_text)
    lines = [f"$ORIGIN {text_of(apex)}.", f"$TTL {zone.ttl}"]
    for name in sorted(zone.rrsets, key=lambda n: (len(n), n)):
        if zone.apex_of(name) != apex:
            continue
        for rtype, rrset in sorted(zone.rrsets[name].items()):
            for rd in rrset.rdatas:
                owner = text_of(name) + "."
                lines.append(f"{owner} {rrset.ttl} IN {TYPE_NAMES[rtype]} {rd.toZone()}")
    return "\n".join(lines) + "\n"

"""One query in, one reply out: the hot path of the DNS server. Pure, no sockets.

The fast path reads the header and the question name, looks the lower-cased question up
in the zone's precomputed answers, and joins: the query's ID, ten precomputed header
bytes, the query's own question (so the answer echoes its case) and the precomputed
sections. Anything unusual (no precomputed answer, EDNS options, errors) takes the slow
path, which parses strictly, answers FORMERR / NOTIMP / REFUSED / BADVERS as RFC 1035 and
6891 say, and caches what `Zone.resolve` computed.
"""

from __future__ import annotations

import struct

from appliance.dns.zone import (
    BADVERS,
    CLASS_ANY,
    CLASS_IN,
    EDNS_SIZE,
    FORMERR,
    NOTIMP,
    REFUSED,
    T_OPT,
    Answer,
    Zone,
    opt_rr,
)

PLAIN_UDP = 512  # RFC 1035 4.2.1, for queries without EDNS
TCP_MAX = 65535
CACHE_LIMIT = 20000  # on-demand answers kept per zone; a flood of new names just recomputes
REPLY_LIMIT = 50000  # whole UDP replies kept per zone, keyed by the query minus its ID
DROPPED = -1  # the rcode we report for a datagram we do not answer (a response, a runt)

RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    16: "BADVERS",
    DROPPED: "dropped",
}

ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0


class Malformed(Exception):
    """The query cannot be understood: FORMERR."""


def _opt(do: int, ext_rcode: int = 0) -> bytes:
    return opt_rr(bool(do), ext_rcode)


def _assemble(
    data: bytes, qfull: int, ans: Answer, edns: bool, do: int, limit: int
) -> tuple[bytes, int]:
    rd = data[2] & 1
    opt = ans.opts[do >> 7] if edns else b""
    room = limit - qfull - len(opt)
    if len(ans.body) <= room:
        head, body = (ans.edns_heads if edns else ans.heads)[rd], ans.body
    elif len(ans.trimmed_body) <= room:
        head = (ans.trimmed_edns_heads if edns else ans.trimmed_heads)[rd]
        body = ans.trimmed_body
    else:
        head, body = (ans.tc_edns_heads if edns else ans.tc_heads)[rd], b""
    return b"".join((data[:2], head, data[12:qfull], body, opt)), ans.rcode


def _error(data: bytes, rcode: int, question: bytes, opt: bytes) -> bytes:
    """A reply with no records: keeps the ID, opcode and RD; echoes the question if any."""
    flags = 0x80 | (data[2] & 0x79)  # QR, opcode, RD
    head = struct.pack(
        ">HBBHHHH",
        int.from_bytes(data[:2], "big"),
        flags,
        rcode & 0xF,
        1 if question else 0,
        0,
        0,
        1 if opt else 0,
    )
    return head + question + opt


def _skip_name(data: bytes, i: int) -> tuple[int, bool]:
    """Past an RR owner name; whether it was the root."""
    first = i
    while True:
        length = data[i]
        if length == 0:
            return i + 1, i == first
        if length >= 0xC0:
            if i + 1 >= len(data):
                raise Malformed("short pointer")
            return i + 2, False
        if length > 63:
            raise Malformed("bad label type")
        i += length + 1


def _question(data: bytes) -> tuple[int, list[bytes]]:
    """Where the question ends, and its name's labels. Malformed (or IndexError)."""
    labels: list[bytes] = []
    i = 12
    length = data[i]
    while length:
        if length > 63:
            raise Malformed("compressed or extended label in the question")
        labels.append(data[i + 1 : i + 1 + length])
        i += length + 1
        length = data[i]
    if i + 1 - 12 > 255:
        raise Malformed("name longer than 255 octets")
    i += 5
    if i > len(data):
        raise Malformed("short question")
    return i, labels


def _echo(data: bytes) -> bytes:
    """The question of a malformed query, when it has one readable question (as knotd
    echoes it), else nothing."""
    if data[4:6] != b"\x00\x01" or data[2] & 0x78:
        return b""
    try:
        end, _ = _question(data)
    except (Malformed, IndexError):
        return b""
    return data[12:end]


class Responder:
    """A zone and the answers computed for it on demand (bounded). The server swaps the
    whole Responder when the zone changes, so a reply never mixes two zones."""

    __slots__ = ("_answers", "_cache", "replies", "zone")

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._answers = zone.answers
        self._cache: dict[bytes, Answer] = {}
        # query minus ID -> (reply minus ID, rcode); UDP only; batch.serve reads it too
        self.replies: dict[bytes, tuple[bytes, int]] = {}

    def reply(self, data: bytes, udp: bool = True) -> tuple[bytes | None, int]:
        """(the reply, or None to stay silent; the rcode to count)."""
        if not udp:
            return self._reply(data, False)
        # Everything but the ID decides the reply, so a repeated question (the common
        # case: clients ask for the same few names) is one dict lookup and a join.
        rest = data[2:]
        hit = self.replies.get(rest)
        if hit is not None:
            return data[:2] + hit[0], hit[1]
        reply, rcode = self._reply(data, True)
        if reply is not None:
            if len(self.replies) >= REPLY_LIMIT:
                self.replies.clear()
            self.replies[rest] = (reply[2:], rcode)
        return reply, rcode

    def _reply(self, data: bytes, udp: bool) -> tuple[bytes | None, int]:
        n = len(data)
        if n < 17 or data[2] & 0xF8 or data[4:10] != ONE_QUESTION:  # QR or opcode set
            return self._slow(data, udp)
        i = 12
        try:
            length = data[i]
            while length:
                if length > 63:
                    return self._slow(data, udp)
                i += length + 1
                length = data[i]
        except IndexError:
            return self._slow(data, udp)
        qend = i + 1
        qfull = qend + 4
        key = data[12:qend].lower() + data[qend:qfull]
        ans = self._answers.get(key) or self._cache.get(key)
        if ans is None:
            return self._slow(data, udp)
        ar = data[10:12]
        if ar == b"\x00\x00" and n == qfull:
            return _assemble(data, qfull, ans, False, 0, PLAIN_UDP if udp else TCP_MAX)
        if (
            ar == b"\x00\x01"
            and n == qfull + 11  # an OPT without options; with options: the slow path
            and data[qfull : qfull + 3] == b"\x00\x00\x29"
            and data[qfull + 6] == 0  # EDNS version 0
        ):
            size = (data[qfull + 3] << 8) | data[qfull + 4]
            limit = max(PLAIN_UDP, min(size, EDNS_SIZE)) if udp else TCP_MAX
            return _assemble(data, qfull, ans, True, data[qfull + 7] & 0x80, limit)
        return self._slow(data, udp)

    def _slow(self, data: bytes, udp: bool) -> tuple[bytes | None, int]:
        if len(data) < 12 or data[2] & 0x80:
            return None, DROPPED  # a runt, or a response: answering could start a loop
        try:
            return self._parse_and_answer(data, udp)
        except (Malformed, IndexError, struct.error):
            return _error(data, FORMERR, _echo(data), b""), FORMERR

    def _parse_and_answer(self, data: bytes, udp: bool) -> tuple[bytes | None, int]:
        opcode = (data[2] >> 3) & 0xF
        qd, an, ns, ar = struct.unpack_from(">HHHH", data, 4)
        n = len(data)
        question = b""
        labels: list[bytes] = []
        i = 12
        if qd >= 1:
            i, labels = _question(data)
            question = data[12:i]
        if opcode != 0:
            return _error(data, NOTIMP, b"", b""), NOTIMP  # its sections may not be ours to echo
        if qd != 1 or an or ns:
            raise Malformed("a query has one question and no answers")
        qtype, qclass = struct.unpack_from(">HH", data, i - 4)
        qfull = i
        edns = False
        do = 0
        size = 0
        version = 0
        for _ in range(ar):
            i, root = _skip_name(data, i)
            rtype, _rclass, ttl, rdlen = struct.unpack_from(">HHIH", data, i)
            i += 10
            end = i + rdlen
            if end > n:
                raise Malformed("short record")
            if rtype == T_OPT:
                if edns or not root:
                    raise Malformed("OPT twice or not at the root")  # RFC 6891 6.1.1
                edns, size = True, _rclass
                version, do = (ttl >> 16) & 0xFF, (ttl >> 8) & 0x80
                while i < end:  # options must tile the RDATA exactly
                    (olen,) = struct.unpack_from(">H", data, i + 2)
                    i += 4 + olen
                if i != end:
                    raise Malformed("bad EDNS option")
            i = end
        if i != n:
            raise Malformed("trailing bytes")
        if edns and version != 0:
            return _error(data, 0, question, _opt(do, BADVERS >> 4)), BADVERS
        if qclass not in (CLASS_IN, CLASS_ANY):  # CH, HS: nothing of ours lives there
            return _error(data, REFUSED, question, _opt(do) if edns else b""), REFUSED
        key = data[12 : qfull - 4].lower() + data[qfull - 4 : qfull]
        ans = self._answers.get(key) or self._cache.get(key)
        if ans is None:
            ans = self.zone.resolve(tuple(label.lower() for label in labels), qtype)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = ans
        if not udp:
            limit = TCP_MAX
        elif edns:
            limit = max(PLAIN_UDP, min(size, EDNS_SIZE))
        else:
            limit = PLAIN_UDP
        return _assemble(data, qfull, ans, edns, do, limit)

"""VRRPv3 adverts on the wire (RFC 5798, RFC 9568): pure encode/decode, no sockets.

The checksum covers an IP pseudo-header, as RFC 5798 and keepalived (by default) do it.
RFC 9568 allows IPv4 adverts checksummed like VRRPv2, over the VRRP message alone
(keepalived's `v3_checksum_as_v2`): we send either form and accept both for IPv4.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from appliance.address import IPVersion, parse_ip, strip_zone

PROTO_VRRP = 112
VERSION = 3
TYPE_ADVERT = 1
TTL = 255  # RFC 5798 5.1.1.3 / 5.1.2.3: anything else crossed a router
GROUP_V4 = "224.0.0.18"
GROUP_V6 = "ff02::12"
PRIORITY_OWNER = 255
PRIORITY_STOP = 0  # "I am leaving": the backups take over after their skew time
MAX_INTERVAL_CS = 0x0FFF  # 12 bits of centiseconds: 40.95 s

DropReason = Literal[
    "short", "ip", "ttl", "version", "type", "length", "checksum", "vrid", "interval", "not_a_peer"
]
DROP_REASONS: tuple[DropReason, ...] = (
    "short",
    "ip",
    "ttl",
    "version",
    "type",
    "length",
    "checksum",
    "vrid",
    "interval",
    "not_a_peer",  # a valid advert from a host that is not one of the instance's peers
)

_HEADER = struct.Struct("!BBBBHH")


class AdvertError(ValueError):
    """An advert we must drop; `reason` is the counter it goes to."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DropReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRPv3 advertisement. `interval_cs` is Max Advertise Interval in centiseconds."""

    vrid: int
    priority: int
    interval_cs: int
    addresses: tuple[str, ...]
    family: IPVersion = 4

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid}: must be 1..255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority}: must be 0..255")
        if not 1 <= self.interval_cs <= MAX_INTERVAL_CS:
            raise ValueError(f"interval {self.interval_cs} cs: must be 1..{MAX_INTERVAL_CS}")
        if len(self.addresses) > 255:
            raise ValueError(f"{len(self.addresses)} addresses: at most 255 fit in an advert")


@dataclass(frozen=True, slots=True)
class Received:
    """An advert that passed every check, with where it came from."""

    advert: Advert
    source: str
    destination: str
    pseudo_header: bool  # which checksum form the sender used


def interval_cs(seconds: float) -> int:
    """Seconds (config) to the advert's centiseconds, clamped to what 12 bits hold."""
    return max(1, min(MAX_INTERVAL_CS, round(seconds * 100)))


def from_peer(source: str, peers: Collection[str]) -> bool:
    """Whether an advert from `source` may reach the state machine: with no peers
    configured, any host on the LAN may (RFC 5798); else only a listed peer.
    `peers` are in `ipaddress`'s canonical form (config normalises them)."""
    if not peers:
        return True
    address = parse_ip(strip_zone(source))
    return address is not None and str(address) in peers


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(family: IPVersion, source: str, destination: str, length: int) -> bytes:
    src = ipaddress.ip_address(source).packed
    dst = ipaddress.ip_address(destination).packed
    if family == 4:
        return src + dst + struct.pack("!BBH", 0, PROTO_VRRP, length)
    return src + dst + struct.pack("!I3xB", length, PROTO_VRRP)


def _packed_addresses(family: IPVersion, addresses: Sequence[str]) -> bytes:
    out = bytearray()
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.version != family:
            raise ValueError(f"{text}: not an IPv{family} address")
        out += address.packed
    return bytes(out)


def encode(advert: Advert, source: str, destination: str, *, pseudo_header: bool = True) -> bytes:
    """The VRRP message (no IP header) as sent from `source` to `destination`.

    IPv6 always checksums the pseudo-header; `pseudo_header=False` is the IPv4-only
    VRRPv2-style form.
    """
    body = _packed_addresses(advert.family, advert.addresses)
    header = _HEADER.pack(
        (VERSION << 4) | TYPE_ADVERT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.interval_cs & MAX_INTERVAL_CS,
        0,
    )
    message = header + body
    prefix = b""
    if pseudo_header or advert.family == 6:
        prefix = _pseudo_header(advert.family, source, destination, len(message))
    checksum = internet_checksum(prefix + message)
    return message[:6] + struct.pack("!H", checksum) + message[8:]


def decode(
    message: bytes,
    *,
    family: IPVersion,
    source: str,
    destination: str,
    ttl: int,
    vrids: Collection[int] | None = None,
) -> Received:
    """Check and parse one VRRP message (after the IP header); raise AdvertError to drop it.

    The checks are RFC 5798 7.1's, in its order; `vrids` are the VRIDs we run (None: any).
    """
    if ttl != TTL:
        raise AdvertError("ttl", f"from {source}: TTL/hop limit {ttl}, must be {TTL}")
    if len(message) < _HEADER.size:
        raise AdvertError("short", f"from {source}: {len(message)} bytes")
    ver_type, vrid, priority, count, rsvd_interval, _ = _HEADER.unpack_from(message)
    version, kind = ver_type >> 4, ver_type & 0x0F
    if version != VERSION:
        raise AdvertError("version", f"from {source}: version {version}")
    if kind != TYPE_ADVERT:
        raise AdvertError("type", f"from {source}: type {kind}")
    size = 4 if family == 4 else 16
    expected = _HEADER.size + count * size
    # IPv4 VRRPv2 senders may pad with authentication data; v3 has none, so lengths match.
    if len(message) != expected:
        raise AdvertError("length", f"from {source}: {len(message)} bytes for {count} address(es)")
    if internet_checksum(_pseudo_header(family, source, destination, len(message)) + message) == 0:
        pseudo = True
    elif family == 4 and internet_checksum(message) == 0:
        pseudo = False
    else:
        raise AdvertError("checksum", f"from {source}: bad checksum")
    if vrids is not None and vrid not in vrids:
        raise AdvertError("vrid", f"from {source}: VRID {vrid} is not ours")
    interval = rsvd_interval & MAX_INTERVAL_CS
    if interval == 0:
        raise AdvertError("interval", f"from {source}: advert interval 0")
    addresses = tuple(
        str(ipaddress.ip_address(message[_HEADER.size + i * size : _HEADER.size + (i + 1) * size]))
        for i in range(count)
    )
    return Received(
        Advert(vrid, priority, interval, addresses, family), source, destination, pseudo
    )


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    source: str
    destination: str
    ttl: int
    protocol: int
    payload: bytes


def parse_ipv4(packet: bytes) -> IPv4Packet:
    """The IPv4 header a raw socket hands us (IPv6 raw sockets give only the payload)."""
    if len(packet) < 20:
        raise AdvertError("ip", f"{len(packet)} bytes: shorter than an IPv4 header")
    version_ihl, _, total = struct.unpack_from("!BBH", packet)
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20 or len(packet) < ihl:
        raise AdvertError("ip", "not an IPv4 header")
    ttl, protocol = packet[8], packet[9]
    source = str(ipaddress.IPv4Address(packet[12:16]))
    destination = str(ipaddress.IPv4Address(packet[16:20]))
    end = min(len(packet), total) if total >= ihl else len(packet)
    return IPv4Packet(source, destination, ttl, protocol, packet[ihl:end])


def ipv4_packet(
    message: bytes, source: str, destination: str, *, ttl: int = TTL, ident: int = 0
) -> bytes:
    """An IPv4 header around a VRRP message (for tests and golden comparisons)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xC0,  # DSCP CS6, as keepalived and routers send VRRP
        20 + len(message),
        ident,
        0,
        ttl,
        PROTO_VRRP,
        0,
        ipaddress.IPv4Address(source).packed,
        ipaddress.IPv4Address(destination).packed,
    )
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + message

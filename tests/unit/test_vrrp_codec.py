"""The VRRPv3 codec against adverts captured from keepalived (tests/unit/golden/vrrp/,
refreshed by tests/netns/ha/test_ha_golden.py with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.ha import vrrp

GOLDEN = Path(__file__).parent / "golden" / "vrrp"
CAPTURES = sorted(GOLDEN.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_golden_captures_exist() -> None:
    names = {p.stem for p in CAPTURES}
    assert {"v4_pseudo", "v4_pseudo_stop", "v6", "v6_stop"} <= names


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_keepalived_advert_decodes_to_its_config(path: Path) -> None:
    cap = _load(path)
    want = cap["configured"]
    got = vrrp.decode(
        bytes.fromhex(cap["vrrp"]),
        family=cap["family"],
        source=cap["source"],
        destination=cap["destination"],
        ttl=cap["ttl"],
        vrids={want["vrid"]},
    )
    assert got.advert.vrid == want["vrid"]
    assert got.advert.priority == want["priority"]
    assert got.advert.interval_cs == want["interval_cs"]
    assert list(got.advert.addresses) == want["addresses"]
    assert got.pseudo_header is want["pseudo_header"]
    assert got.source == cap["source"]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_our_encoding_equals_keepalived_bytes(path: Path) -> None:
    cap = _load(path)
    want = cap["configured"]
    advert = vrrp.Advert(
        want["vrid"],
        want["priority"],
        want["interval_cs"],
        tuple(want["addresses"]),
        cap["family"],
    )
    assert vrrp.encode(advert, cap["source"], cap["destination"]).hex() == cap["vrrp"]


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.stem.startswith("v4")], ids=str)
def test_ipv4_header_of_capture(path: Path) -> None:
    cap = _load(path)
    packet = vrrp.parse_ipv4(bytes.fromhex(cap["ip_packet"]))
    assert (packet.source, packet.destination, packet.ttl, packet.protocol) == (
        cap["source"],
        "224.0.0.18",
        255,
        112,
    )
    assert packet.payload.hex() == cap["vrrp"]


def test_v2_style_checksum_matches_scapy_and_is_accepted() -> None:
    from scapy.utils import checksum as scapy_checksum

    cap = _load(GOLDEN / "v4_pseudo.json")
    want = cap["configured"]
    advert = vrrp.Advert(
        want["vrid"], want["priority"], want["interval_cs"], tuple(want["addresses"])
    )
    ours = vrrp.encode(advert, cap["source"], cap["destination"], pseudo_header=False)
    keepalived = bytes.fromhex(cap["vrrp"])
    # Same message, another checksum: RFC 9568's IPv4 form covers the VRRP message alone.
    assert ours[:6] + ours[8:] == keepalived[:6] + keepalived[8:]
    assert ours[6:8] != keepalived[6:8]
    zeroed = ours[:6] + b"\0\0" + ours[8:]
    assert struct.unpack("!H", ours[6:8])[0] == scapy_checksum(zeroed)
    got = vrrp.decode(ours, family=4, source=cap["source"], destination=cap["destination"], ttl=255)
    assert got.pseudo_header is False
    assert got.advert == advert


def test_v6_ignores_v2_style_checksum() -> None:
    cap = _load(GOLDEN / "v6.json")
    want = cap["configured"]
    advert = vrrp.Advert(
        want["vrid"], want["priority"], want["interval_cs"], tuple(want["addresses"]), 6
    )
    # IPv6 has no VRRPv2 heritage: the pseudo-header is always in the checksum.
    assert (
        vrrp.encode(advert, cap["source"], cap["destination"], pseudo_header=False).hex()
        == cap["vrrp"]
    )


def _drop(message: bytes, **kw: Any) -> vrrp.AdvertError:
    args: dict[str, Any] = {
        "family": 4,
        "source": "198.18.20.1",
        "destination": "224.0.0.18",
        "ttl": 255,
    }
    args.update(kw)
    with pytest.raises(vrrp.AdvertError) as err:
        vrrp.decode(message, **args)
    return err.value


GOOD = vrrp.encode(vrrp.Advert(7, 100, 100, ("198.18.20.50",)), "198.18.20.1", "224.0.0.18")


def _rechecksum(message: bytes) -> bytes:
    zero = message[:6] + b"\0\0" + message[8:]
    pseudo = bytes([198, 18, 20, 1, 224, 0, 0, 18, 0, 112]) + struct.pack("!H", len(zero))
    return zero[:6] + struct.pack("!H", vrrp.internet_checksum(pseudo + zero)) + zero[8:]


@pytest.mark.parametrize(
    ("message", "kw", "reason"),
    [
        (GOOD, {"ttl": 254}, "ttl"),
        (GOOD, {"ttl": 1}, "ttl"),
        (GOOD[:7], {}, "short"),
        (b"", {}, "short"),
        (_rechecksum(bytes([0x21]) + GOOD[1:]), {}, "version"),
        (_rechecksum(bytes([0x32]) + GOOD[1:]), {}, "type"),
        (_rechecksum(GOOD[:3] + b"\x02" + GOOD[4:]), {}, "length"),
        (_rechecksum(GOOD + b"\0\0\0\0\0\0\0\0"), {}, "length"),
        (GOOD[:6] + bytes([GOOD[6] ^ 0xFF]) + GOOD[7:], {}, "checksum"),
        (GOOD, {"source": "198.18.20.2"}, "checksum"),
        (GOOD, {"vrids": {8, 9}}, "vrid"),
        (_rechecksum(GOOD[:4] + b"\x00\x00" + GOOD[6:]), {}, "interval"),
    ],
)
def test_decode_rejects_with_reason(message: bytes, kw: dict[str, Any], reason: str) -> None:
    assert _drop(message, **kw).reason == reason


def test_good_message_decodes() -> None:
    got = vrrp.decode(
        GOOD, family=4, source="198.18.20.1", destination="224.0.0.18", ttl=255, vrids={7}
    )
    assert got.advert == vrrp.Advert(7, 100, 100, ("198.18.20.50",))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 255), st.sampled_from([4, 6]))
def test_garbage_never_crashes(data: bytes, ttl: int, family: int) -> None:
    src, dst = ("198.18.20.1", "224.0.0.18") if family == 4 else ("fe80::1", "ff02::12")
    try:
        vrrp.decode(data, family=family, source=src, destination=dst, ttl=ttl)  # type: ignore[arg-type]
    except vrrp.AdvertError as err:
        assert err.reason in vrrp.DROP_REASONS
    try:
        vrrp.parse_ipv4(data)
    except vrrp.AdvertError as err:
        assert err.reason == "ip"


@given(
    st.integers(1, 255),
    st.integers(0, 255),
    st.integers(1, 4095),
    st.lists(st.ip_addresses(v=4).map(str), max_size=6),
    st.booleans(),
)
def test_round_trip_v4(vrid: int, prio: int, interval: int, addrs: list[str], pseudo: bool) -> None:
    advert = vrrp.Advert(vrid, prio, interval, tuple(addrs))
    wire = vrrp.encode(advert, "198.18.20.3", "198.18.20.4", pseudo_header=pseudo)
    got = vrrp.decode(wire, family=4, source="198.18.20.3", destination="198.18.20.4", ttl=255)
    assert got.advert == advert
    assert got.pseudo_header is pseudo


def test_advert_validates_fields() -> None:
    for bad in (
        {"vrid": 0},
        {"vrid": 256},
        {"priority": 256},
        {"interval_cs": 0},
        {"interval_cs": 4096},
    ):
        fields: dict[str, Any] = {"vrid": 1, "priority": 100, "interval_cs": 100, "addresses": ()}
        fields.update(bad)
        with pytest.raises(ValueError):
            vrrp.Advert(**fields)
    with pytest.raises(ValueError):
        vrrp.encode(vrrp.Advert(1, 1, 1, ("fd00::1",)), "198.18.20.1", "224.0.0.18")


def test_interval_from_seconds() -> None:
    assert vrrp.interval_cs(0.1) == 10
    assert vrrp.interval_cs(1.0) == 100
    assert vrrp.interval_cs(0.001) == 1
    assert vrrp.interval_cs(100.0) == 4095


def test_ipv4_packet_round_trip() -> None:
    packet = vrrp.ipv4_packet(GOOD, "198.18.20.1", "224.0.0.18", ttl=64)
    parsed = vrrp.parse_ipv4(packet)
    assert (parsed.ttl, parsed.protocol, parsed.payload) == (64, 112, GOOD)
    assert vrrp.internet_checksum(packet[:20]) == 0


@pytest.mark.parametrize(
    ("source", "peers", "accepted"),
    [
        ("198.18.0.9", (), True),  # no peers: anyone (RFC 5798), the page warns
        ("198.18.0.2", ("198.18.0.2", "198.18.0.3"), True),
        ("198.18.0.9", ("198.18.0.2", "198.18.0.3"), False),
        ("fe80::2%eth0", ("fe80::2",), True),  # IPv6 sources may carry a scope
        ("fe80:0:0::2", ("fe80::2",), True),  # compared as addresses, not as text
        ("fe80::9", ("fe80::2",), False),
        ("not-an-address", ("198.18.0.2",), False),
    ],
)
def test_from_peer(source: str, peers: tuple[str, ...], accepted: bool) -> None:
    assert vrrp.from_peer(source, peers) is accepted


def test_not_a_peer_is_a_drop_reason() -> None:
    assert "not_a_peer" in vrrp.DROP_REASONS

"""appliance.address: one zone-index rule, the three names of a family, host:port, pools."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from appliance.address import (
    PoolRanges,
    bracket,
    family_of,
    family_of_version,
    host_port,
    in_pools,
    packed,
    parse_ip,
    socket_family,
    socket_family_of,
    strip_zone,
    version_of,
)
from appliance.cluster import fields
from appliance.cluster.fields import ManifestError
from appliance.config import Pool, parse_range

V4 = (ipaddress.IPv4Address("198.18.32.0"), ipaddress.IPv4Address("198.18.32.127"))
V6 = (ipaddress.IPv6Address("fd00:198:18:32::"), ipaddress.IPv6Address("fd00:198:18:32::ff"))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("198.18.0.1", "198.18.0.1"),
        ("fd00:198:18:0:0::1", "fd00:198:18::1"),
        ("fe80::1%eth0", None),  # a zone index is not part of an address we keep
        ("fe80::1%", None),
        (" 198.18.0.1", None),  # exactly the text: callers strip where the format allows
        ("198.18.0.256", None),
        ("", None),
    ],
)
def test_parse_ip_reads_the_text_exactly_and_refuses_zones(
    text: str, canonical: str | None
) -> None:
    parsed = parse_ip(text)
    assert (str(parsed) if parsed is not None else None) == canonical


def test_the_zone_rule_is_the_same_for_config_manifests_and_the_socket() -> None:
    assert parse_range("fe80::1%eth0") == (None, "'fe80::1%eth0' is not an IP network or range")
    with pytest.raises(ManifestError, match="must be an IP address"):
        fields.ip("fe80::1%eth0", "spec.loadBalancerIP")
    assert strip_zone("fe80::1%eth0") == "fe80::1"
    assert strip_zone("198.18.0.1") == "198.18.0.1"


def test_the_three_names_of_a_family() -> None:
    assert [version_of("IPv4"), version_of("IPv6")] == [4, 6]
    assert [family_of_version(4), family_of_version(6)] == ["IPv4", "IPv6"]
    assert [family_of("198.18.0.1"), family_of("fd00::1")] == ["IPv4", "IPv6"]
    assert [socket_family(4), socket_family(6)] == [socket.AF_INET, socket.AF_INET6]
    assert socket_family_of("::") == socket.AF_INET6
    assert packed("198.18.0.1") == (socket.AF_INET, bytes([198, 18, 0, 1]))
    assert packed("::1") == (socket.AF_INET6, bytes(15) + b"\1")
    assert sorted(["fd00::1", "198.18.0.10", "198.18.0.9"], key=packed) == [
        "198.18.0.9",
        "198.18.0.10",
        "fd00::1",
    ]


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("198.18.0.1", 80) == "198.18.0.1:80"
    assert host_port("fd00:198:18::1", "53") == "[fd00:198:18::1]:53"
    assert bracket("fd00::1") == "[fd00::1]" and bracket("lb.example") == "lb.example"


def test_pool_ranges_find_the_first_pool_holding_an_address() -> None:
    lab, six = Pool("lab", (V4,)), Pool("six", (V6,))
    ranges = PoolRanges.of([lab, six, Pool("again", (V4,))])
    assert ranges.pool_of(ipaddress.ip_address("198.18.32.1")) is lab
    assert ranges.pool_of(ipaddress.ip_address("fd00:198:18:32::ff")) is six
    assert ranges.pool_of(ipaddress.ip_address("198.18.32.128")) is None
    # The same integer in the other family is not in the pool.
    assert ranges.pool_of(ipaddress.IPv6Address(int(V4[0]))) is None
    assert ranges.holds("198.18.32.127") and not ranges.holds("not an address")
    assert in_pools("fd00:198:18:32::1", [lab, six]) and not in_pools("10.0.0.1", [lab, six])
    assert not PoolRanges.of([]).holds("198.18.32.1")

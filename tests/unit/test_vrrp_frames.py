"""GARP and unsolicited NA frames, parsed by scapy (an independent decoder)."""

from __future__ import annotations

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from appliance.ha import frames

MAC = "02:aa:bb:cc:dd:01"


def test_gratuitous_arp() -> None:
    frame = Ether(frames.gratuitous_arp(MAC, "198.18.20.100"))
    assert frame.dst == "ff:ff:ff:ff:ff:ff"
    assert frame.src == MAC
    arp = frame[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (1, MAC, "198.18.20.100", "198.18.20.100")
    assert arp.hwdst == "00:00:00:00:00:00"
    assert len(bytes(frame)) == 60


def test_unsolicited_na() -> None:
    raw = frames.unsolicited_na(MAC, "fd00:198:18:20::100", "fe80::aa:1")
    frame = Ether(raw)
    assert frame.dst == "33:33:00:00:00:01"
    ip6 = frame[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh) == ("fe80::aa:1", "ff02::1", 255, 58)
    na = frame[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, "fd00:198:18:20::100")
    assert frame[ICMPv6NDOptDstLLAddr].lladdr == MAC
    # scapy recomputes the checksum when the field is cleared: it must agree with ours.
    sent = na.cksum
    del frame[ICMPv6ND_NA].cksum
    assert Ether(bytes(frame))[ICMPv6ND_NA].cksum == sent


def test_announcement_picks_by_family() -> None:
    assert frames.announcement(MAC, "198.18.20.1")[12:14] == b"\x08\x06"
    assert frames.announcement(MAC, "fd00:198:18:20::1")[12:14] == b"\x86\xdd"


@pytest.mark.parametrize("mac", ["", "02:aa", "zz:aa:bb:cc:dd:ee"])
def test_bad_mac(mac: str) -> None:
    with pytest.raises(ValueError):
        frames.gratuitous_arp(mac, "198.18.20.1")

"""Ethernet frames that tell a LAN a VIP moved: gratuitous ARP and unsolicited NA. Pure.

Gratuitous ARP is an ARP request for the VIP from the VIP (RFC 5227 "announcement"), sent to
broadcast, as keepalived sends it. The unsolicited NA (RFC 4861 7.2.6) goes to all-nodes
with the Override flag set, so neighbours replace the old MAC at once.
"""

from __future__ import annotations

import ipaddress
import struct

from appliance.ha.vrrp import internet_checksum

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES = "ff02::1"
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6 = 58
NA_TYPE = 136
NA_OVERRIDE = 0x20000000
OPT_TARGET_LLADDR = 2
ETH_MIN = 60  # frames shorter than this get padded on the wire anyway


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"{mac}: not a MAC address")
    return bytes(int(p, 16) for p in parts)


def gratuitous_arp(mac: str, vip: str) -> bytes:
    src = mac_bytes(mac)
    ip = ipaddress.IPv4Address(vip).packed
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src + ip + b"\0" * 6 + ip
    frame = BROADCAST + src + struct.pack("!H", ETH_P_ARP) + arp
    return frame.ljust(ETH_MIN, b"\0")


def unsolicited_na(mac: str, vip: str, source: str | None = None) -> bytes:
    """`source` is the IPv6 source (an address of the interface; the VIP if None)."""
    src_mac = mac_bytes(mac)
    target = ipaddress.IPv6Address(vip).packed
    src = ipaddress.IPv6Address(source or vip).packed
    dst = ipaddress.IPv6Address(ALL_NODES).packed
    option = struct.pack("!BB", OPT_TARGET_LLADDR, 1) + src_mac
    icmp = struct.pack("!BBHI", NA_TYPE, 0, 0, NA_OVERRIDE) + target + option
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), ICMPV6)
    checksum = internet_checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", checksum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255) + src + dst
    return ALL_NODES_MAC + src_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + icmp


def announcement(mac: str, vip: str, link_local: str | None = None) -> bytes:
    """The frame that moves `vip` to `mac`: GARP for IPv4, unsolicited NA for IPv6."""
    if ipaddress.ip_address(vip).version == 4:
        return gratuitous_arp(mac, vip)
    return unsolicited_na(mac, vip, link_local)

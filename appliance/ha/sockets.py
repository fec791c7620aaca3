"""The raw IP sockets (protocol 112) of one address family that a VRRP speaker reads and
sends adverts on, set up as keepalived does: multicast group joined on the interface,
TTL/hop limit 255, the Internet Control precedence, our own adverts not looped back."""

from __future__ import annotations

import socket
import struct

from appliance.address import IPVersion, socket_family, strip_zone
from appliance.ha import vrrp
from appliance.ha.link import LinkInfo

IPTOS_PREC_INTERNETCONTROL = 0xC0  # what keepalived and routers mark VRRP with


class VrrpSockets:
    """The two raw sockets of one family: receiving (multicast joined) and sending (bound to
    our source address, which the checksum covers)."""

    def __init__(self, family: IPVersion, link: LinkInfo) -> None:
        self.family = family
        self.source = link.ipv4 if family == 4 else link.ipv6_link_local
        if self.source is None:
            kind = "IPv4 address" if family == 4 else "IPv6 link-local address"
            raise OSError(f"interface {link.name}: no {kind} to send VRRP from")
        af = socket_family(family)
        self.recv = socket.socket(af, socket.SOCK_RAW, vrrp.PROTO_VRRP)
        self.send = socket.socket(af, socket.SOCK_RAW, vrrp.PROTO_VRRP)
        ifname = link.name.encode()
        for s in (self.recv, self.send):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname)
            s.setblocking(False)
        if family == 4:
            mreqn = struct.pack("4s4si", socket.inet_aton(vrrp.GROUP_V4), b"\0\0\0\0", link.index)
            self.recv.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            self.send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            self.send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, vrrp.TTL)
            self.send.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, vrrp.TTL)
            self.send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            self.send.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IPTOS_PREC_INTERNETCONTROL)
            self.send.bind((self.source, 0))
        else:
            mreq = socket.inet_pton(socket.AF_INET6, vrrp.GROUP_V6) + struct.pack("@I", link.index)
            self.recv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            self.recv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            self.recv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            self.send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
            self.send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, vrrp.TTL)
            self.send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, vrrp.TTL)
            self.send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            self.send.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_TCLASS, IPTOS_PREC_INTERNETCONTROL
            )
            self.send.bind((self.source, 0, 0, link.index))
        self.index = link.index

    def read(self) -> tuple[bytes, str, str, int] | None:
        """One message as (vrrp bytes, source, destination, ttl); None when drained.
        Raises AdvertError for an IPv4 packet whose header makes no sense."""
        try:
            data, ancillary, _, peer = self.recv.recvmsg(4096, 256)
        except (BlockingIOError, InterruptedError):
            return None
        if self.family == 4:
            packet = vrrp.parse_ipv4(data)
            return packet.payload, packet.source, packet.destination, packet.ttl
        ttl, destination = -1, vrrp.GROUP_V6
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                ttl = struct.unpack("@i", value[:4])[0]
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                destination = socket.inet_ntop(socket.AF_INET6, value[:16])
        source = strip_zone(str(peer[0]))
        return data, source, destination, ttl

    def sendto(self, message: bytes, destination: str) -> None:
        if self.family == 4:
            self.send.sendto(message, (destination, 0))
        else:
            self.send.sendto(message, (destination, 0, 0, self.index))

    def close(self) -> None:
        self.recv.close()
        self.send.close()

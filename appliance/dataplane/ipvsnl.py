"""IPVS generic netlink messages, encoded by hand, and a pipelined sender.

pyroute2 builds and awaits each request on its own; for 200,000 real servers that costs
far more than the kernel's work. Writes here are plain bytes (the same bytes pyroute2
sends: tests compare them) sent in windows of many messages, each acknowledged. Reads
(dumps) stay with pyroute2.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.address import packed
from appliance.dataplane.ipvsrules import (
    FWD_METHOD,
    IP_VS_SVC_F_PERSISTENT,
    IpvsDest,
    IpvsService,
    dest_args,
    service_args,
)

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
# include/uapi/linux/ip_vs.h
NEW_SERVICE, SET_SERVICE, DEL_SERVICE, NEW_DEST, SET_DEST, DEL_DEST = 1, 2, 3, 5, 6, 7
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT = 1, 2, 3, 4
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ADDR_FAMILY, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 13, 14, 15
PROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
WINDOW = 256  # messages in flight before reading their acknowledgements


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _u16(v: int) -> bytes:
    return struct.pack("=H", v)


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def _be16(v: int) -> bytes:
    return struct.pack("!H", v)


def service_attrs(svc: IpvsService, full: bool) -> bytes:
    """IPVS_CMD_ATTR_SERVICE: the key, and for add/set everything else the kernel wants."""
    af, raw = packed(svc.vip)
    out = (
        attr(SVC_ADDR, raw)
        + attr(SVC_AF, _u16(af))
        + attr(SVC_PORT, _be16(svc.port))
        + attr(SVC_PROTOCOL, _u16(PROTO[svc.protocol]))
    )
    if full:
        flags = IP_VS_SVC_F_PERSISTENT if svc.persistence else 0
        # The kernel reads the netmask as a host-order u32: a prefix length for IPv6.
        netmask = struct.pack("=I", 128) if af == socket.AF_INET6 else b"\xff" * 4
        out += (
            attr(SVC_SCHED_NAME, svc.scheduler.encode() + b"\0")
            + attr(SVC_TIMEOUT, _u32(svc.persistence))
            + attr(SVC_FLAGS, struct.pack("=II", flags, 0xFFFFFFFF))
            + attr(SVC_NETMASK, netmask)
        )
    return attr(CMD_ATTR_SERVICE, out)


def dest_attrs(dest: IpvsDest, full: bool) -> bytes:
    af, raw = packed(dest.address)
    key = (
        attr(DEST_ADDR, raw) + attr(DEST_ADDR_FAMILY, _u16(af)) + attr(DEST_PORT, _be16(dest.port))
    )
    if not full:
        return attr(CMD_ATTR_DEST, key)
    tunnel = (
        attr(DEST_TUN_TYPE, b"\0")
        + attr(DEST_TUN_PORT, _be16(0))
        + attr(DEST_TUN_FLAGS, _u16(0))
        + attr(DEST_U_THRESH, _u32(0))
        + attr(DEST_L_THRESH, _u32(0))
    )
    # fwd_method always explicit: the kernel's (and pyroute2's) default is not ours.
    rest = attr(DEST_WEIGHT, _u32(dest.weight)) + attr(DEST_FWD_METHOD, _u32(FWD_METHOD[dest.fwd]))
    return attr(CMD_ATTR_DEST, tunnel + key + rest)


def message(family: int, cmd: int, payload: bytes, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", cmd, 1, 0) + payload
    return struct.pack("=IHHII", 16 + len(body), family, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


@dataclass(frozen=True, slots=True)
class Op:
    """One change, encoded without its family id and sequence number."""

    cmd: int
    payload: bytes
    svc: IpvsService
    dest: IpvsDest | None = None

    def __str__(self) -> str:
        """The same change in ipvsadm's words, for messages."""
        verb = {NEW_SERVICE: "-A", SET_SERVICE: "-E", DEL_SERVICE: "-D"}.get(self.cmd)
        if verb is not None or self.dest is None:
            return f"{verb or '-D'} {service_args(self.svc)}"
        verb = {NEW_DEST: "-a", SET_DEST: "-e"}.get(self.cmd, "-d")
        return f"{verb} {dest_args(self.svc, self.dest)}"


def add_service(svc: IpvsService) -> Op:
    return Op(NEW_SERVICE, service_attrs(svc, True), svc)


def set_service(svc: IpvsService) -> Op:
    return Op(SET_SERVICE, service_attrs(svc, True), svc)


def del_service(svc: IpvsService) -> Op:
    return Op(DEL_SERVICE, service_attrs(svc, False), svc)


def add_dest(svc: IpvsService, dest: IpvsDest) -> Op:
    return Op(NEW_DEST, service_attrs(svc, False) + dest_attrs(dest, True), svc, dest)


def set_dest(svc: IpvsService, dest: IpvsDest) -> Op:
    return Op(SET_DEST, service_attrs(svc, False) + dest_attrs(dest, True), svc, dest)


def del_dest(svc: IpvsService, dest: IpvsDest) -> Op:
    return Op(DEL_DEST, service_attrs(svc, False) + dest_attrs(dest, False), svc, dest)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[i + 4 : i + length]
        i += length + (-length % 4)
    return out


class IpvsLink:
    """A generic netlink socket to the IPVS family, in the calling thread's namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.seq = 0
        self.family = self._resolve()

    def _resolve(self) -> int:
        name = attr(CTRL_ATTR_FAMILY_NAME, b"IPVS\0")
        self.sock.send(message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, name, 1))
        while True:
            data = self.sock.recv(65536)
            length, kind = struct.unpack_from("=IH", data)
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, 16)
                if code == 0:
                    continue
                raise OSError(-code, "IPVS netlink family missing (modprobe ip_vs?)")
            found = _attrs(data[20:length]).get(CTRL_ATTR_FAMILY_ID)
            if found is None:
                raise OSError(errno.ENOENT, "IPVS netlink family missing")
            (family,) = struct.unpack("=H", found[:2])
            return int(family)

    def run(self, ops: Sequence[Op]) -> list[tuple[Op, int]]:
        """Send every op, WINDOW at a time; return those the kernel refused, with errno."""
        failed: list[tuple[Op, int]] = []
        for start in range(0, len(ops), WINDOW):
            window = ops[start : start + WINDOW]
            first = self.seq + 1
            self.seq += len(window)
            batch = b"".join(
                message(self.family, op.cmd, op.payload, first + n) for n, op in enumerate(window)
            )
            self.sock.sendall(batch)
            pending = len(window)
            while pending:
                data = self.sock.recv(1 << 20)
                i = 0
                while i + 16 <= len(data):
                    length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, i)
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, i + 16)
                        if code:
                            failed.append((window[seq - first], -code))
                        pending -= 1
                    i += max(length + (-length % 4), 16)
        return failed

    def close(self) -> None:
        self.sock.close()


def describe(failed: list[tuple[Op, int]]) -> str:
    op, code = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"IPVS refused `{op}`: {os.strerror(code)}{more}"

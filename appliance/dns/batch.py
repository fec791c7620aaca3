"""UDP in batches: recvmmsg(2) / sendmmsg(2) through ctypes (Linux).

One system call reads up to `BATCH` queries and one sends their replies, which is how
knotd keeps its per-packet cost low. The message headers, their buffers and the peer
addresses live in fixed ctypes arrays; Python touches them through memoryviews (plain
integer and slice operations), never through ctypes attribute access, which costs more
than the copy. Where recvmmsg is missing `available()` is False and the server falls
back to a recvfrom/sendto loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
from collections.abc import Callable, Mapping
from ctypes import c_int, c_size_t, c_uint, c_uint32, c_void_p

BATCH = 64
SLOT = 4096  # bytes per received datagram; longer queries are cut (and get FORMERR)
OUT_SLOT = 1232  # our largest UDP reply (EDNS_SIZE)
NAME = 128  # sizeof(struct sockaddr_storage)
MSG_WAITFORONE = 0x10000


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", c_void_p),
        ("msg_namelen", c_uint32),
        ("msg_iov", c_void_p),
        ("msg_iovlen", c_size_t),
        ("msg_control", c_void_p),
        ("msg_controllen", c_size_t),
        ("msg_flags", c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", c_uint)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
    recv.restype = c_int
    send.argtypes = [c_int, c_void_p, c_uint, c_int]
    send.restype = c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None and ctypes.sizeof(c_void_p) == 8


# Where the per-packet fields sit, in words of the header arrays.
_LEN_AT = _MMsgHdr.msg_len.offset // 4
_NAMELEN_AT = _MsgHdr.msg_namelen.offset // 4
_NAME_AT = _MsgHdr.msg_name.offset // 8
_IOV_LEN_AT = _IOVec.iov_len.offset // 8
_PER_IOV = ctypes.sizeof(_IOVec) // 8


class _Batch:
    """One socket's fixed buffers: `BATCH` message headers each way, their data slots and
    the peers' addresses, and the word views the per-packet loop writes through."""

    def __init__(self) -> None:
        self.inbuf = ctypes.create_string_buffer(BATCH * SLOT)
        self.outbuf = ctypes.create_string_buffer(BATCH * OUT_SLOT)
        self.names = ctypes.create_string_buffer(BATCH * NAME)
        self.in_iov = (_IOVec * BATCH)()
        self.out_iov = (_IOVec * BATCH)()
        self.in_msgs = (_MMsgHdr * BATCH)()
        self.out_msgs = (_MMsgHdr * BATCH)()
        in_base, out_base = ctypes.addressof(self.inbuf), ctypes.addressof(self.outbuf)
        self.name_base = ctypes.addressof(self.names)
        for i in range(BATCH):
            self.in_iov[i].iov_base, self.in_iov[i].iov_len = in_base + i * SLOT, SLOT
            self.out_iov[i].iov_base = out_base + i * OUT_SLOT
            h = self.in_msgs[i].msg_hdr
            h.msg_name, h.msg_namelen = self.name_base + i * NAME, NAME
            h.msg_iov, h.msg_iovlen = ctypes.addressof(self.in_iov[i]), 1
            o = self.out_msgs[i].msg_hdr
            o.msg_iov, o.msg_iovlen = ctypes.addressof(self.out_iov[i]), 1

        # Word views of the header arrays: the fields we touch per packet, by index.
        self.size = ctypes.sizeof(_MMsgHdr)
        self.in_u32 = memoryview(self.in_msgs).cast("B").cast("I")
        self.out_u32 = memoryview(self.out_msgs).cast("B").cast("I")
        self.out_u64 = memoryview(self.out_msgs).cast("B").cast("Q")
        self.out_iov_u64 = memoryview(self.out_iov).cast("B").cast("Q")
        self.per_u32, self.per_u64 = self.size // 4, self.size // 8
        self.data_in = memoryview(self.inbuf).cast("B")
        self.data_out = memoryview(self.outbuf).cast("B")
        self.in_ptr, self.out_ptr = ctypes.addressof(self.in_msgs), ctypes.addressof(self.out_msgs)


def serve(
    sock: socket.socket,
    answer: Callable[[bytes], tuple[bytes | None, int]],
    replies: Callable[[], Mapping[bytes, tuple[bytes, int]]],
    counts: list[int],
    stopping: Callable[[], bool],
) -> None:
    """Answer datagrams on `sock` until `stopping()` (checked after every wake-up; the
    server shuts the socket down to wake us). `answer(query) -> (reply or None, rcode)`;
    `replies()` is the current reply cache (query minus ID -> reply minus ID, rcode),
    looked up here first so a repeated question costs no call at all."""
    assert _LIBC is not None
    recvmmsg = _LIBC.recvmmsg
    fd = sock.fileno()
    b = _Batch()
    while not stopping():
        n = recvmmsg(fd, b.in_ptr, BATCH, MSG_WAITFORONE, None)
        if n <= 0:
            continue  # EINTR, or shut down (the loop condition tells)
        if stopping():
            return
        # The cache once per batch: a zone swap takes effect at the next one.
        ready = _answer(b, n, answer, replies(), counts)
        _send(fd, b, ready)
        for i in range(n):  # the kernel shrank them to the address it wrote
            b.in_u32[i * b.per_u32 + _NAMELEN_AT] = NAME


def _answer(
    b: _Batch,
    n: int,
    answer: Callable[[bytes], tuple[bytes | None, int]],
    cache: Mapping[bytes, tuple[bytes, int]],
    counts: list[int],
) -> int:
    """Fill the out slots with the replies to the `n` queries received; how many."""
    in_u32, out_u32, out_u64, out_iov_u64 = b.in_u32, b.out_u32, b.out_u64, b.out_iov_u64
    per_u32, per_u64, name_base = b.per_u32, b.per_u64, b.name_base
    data_in, data_out = b.data_in, b.data_out
    j = 0
    for i in range(n):
        length = in_u32[i * per_u32 + _LEN_AT]
        start = i * SLOT
        out = j * OUT_SLOT
        hit = cache.get(bytes(data_in[start + 2 : start + length]))
        if hit is not None:
            tail, rcode = hit
            size_out = len(tail) + 2
            data_out[out : out + 2] = data_in[start : start + 2]  # the query's ID
            data_out[out + 2 : out + size_out] = tail
        else:
            reply, rcode = answer(bytes(data_in[start : start + length]))
            if reply is None or len(reply) > OUT_SLOT:
                counts[rcode] += 1
                continue
            size_out = len(reply)
            data_out[out : out + size_out] = reply
        counts[rcode] += 1
        out_iov_u64[j * _PER_IOV + _IOV_LEN_AT] = size_out
        out_u64[j * per_u64 + _NAME_AT] = name_base + i * NAME
        out_u32[j * per_u32 + _NAMELEN_AT] = in_u32[i * per_u32 + _NAMELEN_AT]
        j += 1
    return j


def _send(fd: int, b: _Batch, j: int) -> None:
    """Send the first `j` replies, in as many sendmmsg calls as it takes."""
    assert _LIBC is not None
    sendmmsg = _LIBC.sendmmsg
    sent = 0
    while sent < j:
        k = sendmmsg(fd, b.out_ptr + sent * b.size, j - sent, 0)
        if k < 0:
            if ctypes.get_errno() == errno.EINTR:
                continue
            k = 1  # that peer is unreachable or its buffer full: skip its reply
        sent += k

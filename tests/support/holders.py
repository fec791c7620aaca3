"""Who holds each VIP, seen from a client on the LAN: ARP probes and the VRRP adverts.

    ip netns exec <client-ns> python3 tests/support/holders.py --interface eth0 \\
        --source 198.18.20.9 --vips 198.19.0.0,198.19.39.15 --interval 0.02 \\
        --duration 60 --out holders.json

An observer independent of the code under test: the standard library only, no import
from `appliance`, run with the system's python3. On an AF_PACKET socket bound to the
interface it

- every `interval` sends one ARP who-has per watched VIP (from `--source` and the
  interface's MAC) and records, per sample and VIP, the set of MACs that replied to it
  within that sample's window (from this send to the next, by the kernel's receive
  timestamp, so a slow observer never moves a reply into the wrong window);
- captures every VRRP advert (IPv4 protocol 112): time, source IP and MAC, VRID,
  priority, advert interval.

The ARP socket takes only frames addressed to our MAC (a socket filter in the kernel):
a takeover sends thousands of broadcast gratuitous ARPs, which would otherwise fill the
socket's buffer and push out the replies that matter. Both sockets' drop counts (the
kernel's PACKET_STATISTICS) are in the output; a sample is only trustworthy when they are 0.

A healthy pair gives exactly one MAC per sample for every VIP and one advertising source
per VRID. Split brain shows as samples with two MACs and the advertising source changing
back and forth; a gap (nobody holds the VIP) as samples with none.

It prints `listening` on stdout once its sockets are bound, stops after `--duration`
seconds (or at SIGTERM / SIGINT) and writes the JSON summary to `--out` (see `summarise`).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import ipaddress
import itertools
import json
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name these
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
RCVBUF = 32 << 20
IPPROTO_VRRP = 112
ARP_REQUEST, ARP_REPLY = 1, 2
BROADCAST = b"\xff" * 6
KEEP_TIMES = 200  # at most this many bad-sample times / transitions listed per key


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


# --- frames -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arp:
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


@dataclass(frozen=True)
class Advert:
    time: float
    source: str  # the IPv4 source address
    mac: str  # the Ethernet source address
    vrid: int
    priority: int
    interval: float  # seconds (VRRPv3 centiseconds; VRRPv2 whole seconds)
    version: int


def arp_request(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """An Ethernet broadcast ARP who-has `target_ip` tell `src_ip`."""
    ether = BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARP_REQUEST)
    arp += src_mac + socket.inet_aton(src_ip) + b"\x00" * 6 + socket.inet_aton(target_ip)
    return ether + arp


def to_mac_filter(mac: bytes) -> bytes:
    """A classic BPF program that keeps the frames whose Ethernet destination is `mac`.

    ld [2]; jeq #mac[2:6] else drop; ldh [0]; jeq #mac[0:2] else drop; ret all; drop: ret 0
    """
    low = struct.unpack("!I", mac[2:6])[0]
    high = struct.unpack("!H", mac[0:2])[0]
    program = [
        (0x20, 0, 0, 2),  # BPF_LD | BPF_W | BPF_ABS
        (0x15, 0, 3, low),  # BPF_JMP | BPF_JEQ | BPF_K
        (0x28, 0, 0, 0),  # BPF_LD | BPF_H | BPF_ABS
        (0x15, 0, 1, high),
        (0x06, 0, 0, 0x40000),  # BPF_RET | BPF_K: the whole frame
        (0x06, 0, 0, 0),  # BPF_RET | BPF_K: nothing
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def parse_arp(frame: bytes) -> Arp | None:
    """An Ethernet/IPv4 ARP frame, or None for anything else (or too short)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    body = frame[22:42]
    return Arp(
        op,
        mac_text(body[0:6]),
        socket.inet_ntoa(body[6:10]),
        mac_text(body[10:16]),
        socket.inet_ntoa(body[16:20]),
    )


def parse_vrrp(frame: bytes, when: float) -> Advert | None:
    """A VRRP advertisement in an Ethernet/IPv4 frame, or None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[0] >> 4 != 4 or ip[9] != IPPROTO_VRRP:
        return None
    ihl = (ip[0] & 0x0F) * 4
    vrrp = ip[ihl:]
    if ihl < 20 or len(vrrp) < 8:
        return None
    version, kind = vrrp[0] >> 4, vrrp[0] & 0x0F
    if kind != 1 or version not in (2, 3):
        return None
    # VRRPv3: 12 bits of centiseconds; VRRPv2: one byte of whole seconds.
    interval = (((vrrp[4] & 0x0F) << 8) | vrrp[5]) / 100.0 if version == 3 else float(vrrp[5])
    return Advert(
        when,
        socket.inet_ntoa(ip[12:16]),
        mac_text(frame[6:12]),
        vrrp[1],
        vrrp[2],
        interval,
        version,
    )


# --- summaries (pure) -------------------------------------------------------------------


def assign(
    sends: Sequence[float], replies: Iterable[tuple[float, str, str]], vips: Sequence[str]
) -> dict[str, list[set[str]]]:
    """VIP -> one set of replying MACs per sample. Sample k is the window from `sends[k]`
    to `sends[k+1]` (the last one: to the end of the capture); a reply (time, vip, mac)
    counts for the window its time falls in, and a reply before the first send for none."""
    samples: dict[str, list[set[str]]] = {vip: [set() for _ in sends] for vip in vips}
    for when, vip, mac in replies:
        k = bisect.bisect_right(sends, when) - 1
        if k >= 0 and vip in samples:
            samples[vip][k].add(mac)
    return samples


def summarise_samples(
    sends: Sequence[float], samples: dict[str, list[set[str]]], start: float
) -> dict[str, Any]:
    """Per VIP: how many samples had 0, 1 and 2+ replying MACs, the times (seconds after
    `start`) of the bad ones (0 or 2+), every MAC seen, and when the holder changed."""
    out: dict[str, Any] = {}
    for vip, per_sample in samples.items():
        counts = {"0": 0, "1": 0, "2+": 0}
        bad: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        previous: list[str] | None = None
        seen: dict[str, int] = {}
        for when, macs in zip(sends, per_sample, strict=True):
            key = "0" if not macs else "1" if len(macs) == 1 else "2+"
            counts[key] += 1
            holders = sorted(macs)
            for mac in holders:
                seen[mac] = seen.get(mac, 0) + 1
            t = round(when - start, 3)
            if key != "1" and len(bad) < KEEP_TIMES:
                bad.append({"t": t, "macs": holders})
            if holders != previous:
                if previous is not None and len(changes) < KEEP_TIMES:
                    changes.append({"t": t, "macs": holders})
                previous = holders
        out[vip] = {
            "samples": len(per_sample),
            "counts": counts,
            "bad": bad,
            "holder_changes": changes,
            "macs": seen,
        }
    return out


def summarise_adverts(adverts: Sequence[Advert], start: float) -> dict[str, Any]:
    """Per VRID: the adverts by source, and the transitions.

    A transition is a change of the advertising source between two consecutive adverts
    of priority > 0. A priority-0 advert (a master resigning) is counted apart and is no
    source of its own: the resigning master's last advert with a priority already named it,
    and whoever takes over shows as the next source. Two masters at once (split brain)
    interleave their adverts, so every switch between them is one transition. `max_gap`
    is the longest silence between two adverts of one source: the figure to compare with
    the backup's Master_Down_Interval (3 x interval + skew)."""
    by_vrid: dict[int, list[Advert]] = {}
    for a in sorted(adverts, key=lambda a: a.time):
        by_vrid.setdefault(a.vrid, []).append(a)
    out: dict[str, Any] = {}
    for vrid, items in sorted(by_vrid.items()):
        sources: dict[str, dict[str, Any]] = {}
        last_of: dict[str, float] = {}
        transitions: list[dict[str, Any]] = []
        n_transitions = 0
        resigns: list[dict[str, Any]] = []
        current: str | None = None
        first: str | None = None
        for a in items:
            t = round(a.time - start, 3)
            s = sources.setdefault(
                a.source,
                {"adverts": 0, "mac": a.mac, "priorities": [], "intervals": [], "max_gap": 0.0},
            )
            s["adverts"] += 1
            if a.priority not in s["priorities"]:
                s["priorities"].append(a.priority)
            if a.interval not in s["intervals"]:
                s["intervals"].append(a.interval)
            if a.source in last_of:
                s["max_gap"] = round(max(s["max_gap"], a.time - last_of[a.source]), 4)
            last_of[a.source] = a.time
            if a.priority == 0:
                if len(resigns) < KEEP_TIMES:
                    resigns.append({"t": t, "source": a.source})
                continue
            if current is None:
                current = first = a.source
            elif a.source != current:
                n_transitions += 1
                if len(transitions) < KEEP_TIMES:
                    transitions.append({"t": t, "from": current, "to": a.source})
                current = a.source
        out[str(vrid)] = {
            "adverts": len(items),
            "first_source": first,
            "transitions": n_transitions,
            "transition_times": transitions,
            "resigns": resigns,
            "sources": sources,
        }
    return out


def summarise(
    sends: Sequence[float],
    replies: Sequence[tuple[float, str, str]],
    adverts: Sequence[Advert],
    vips: Sequence[str],
    interval: float,
    start: float,
    drops: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The observer's whole answer, as written to `--out`. `max_send_gap` says whether the
    observer kept up (a window much longer than `interval` is one coarse sample)."""
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    per_vip = summarise_samples(sends, assign(sends, replies, vips), start)
    totals = {"0": 0, "1": 0, "2+": 0}
    for v in per_vip.values():
        for key, n in v["counts"].items():
            totals[key] += n
    advert_summary = summarise_adverts(adverts, start)
    return {
        "interval": interval,
        "duration": round((sends[-1] - start) if sends else 0.0, 3),
        "sends": len(sends),
        "max_send_gap": round(max(gaps), 4) if gaps else None,
        "vips": per_vip,
        "totals": totals,
        "drops": drops or {},
        "adverts": {
            "raw": len(adverts),
            "transitions": sum(v["transitions"] for v in advert_summary.values()),
            "by_vrid": advert_summary,
        },
    }


# --- the capture ------------------------------------------------------------------------


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return float(sec + nsec / 1e9)
    return time.time()


def _socket(interface: str, proto: int, only_to: bytes | None = None) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:  # root may exceed net.core.rmem_max
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except PermissionError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    if only_to is not None:
        program = to_mac_filter(only_to)
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    s.bind((interface, proto))
    s.setblocking(False)
    return s


def _drops(s: socket.socket) -> int:
    """Frames the kernel dropped for this socket (a full buffer) since the last call."""
    _packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return int(drops)


class Observer:
    def __init__(self, interface: str, source: str, vips: Sequence[str], interval: float):
        self.interface, self.source, self.vips, self.interval = interface, source, vips, interval
        mac = Path(f"/sys/class/net/{interface}/address").read_text().strip()
        self.mac = mac_bytes(mac)
        self.requests = [arp_request(self.mac, source, vip) for vip in vips]
        self.arp = _socket(interface, ETH_P_ARP, only_to=self.mac)
        self.ip = _socket(interface, ETH_P_IP)
        self.sends: list[float] = []
        self.replies: list[tuple[float, str, str]] = []
        self.adverts: list[Advert] = []
        self.drops = {"arp": 0, "ip": 0}
        self.stopping = False
        self._watched = set(vips)

    def _drain(self, s: socket.socket) -> None:
        while True:
            try:
                frame, ancillary, _flags, address = s.recvmsg(2048, 64)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            when = _kernel_time(ancillary)
            if s is self.arp:
                self._on_arp(frame, when)
            else:
                advert = parse_vrrp(frame, when)
                if advert is not None:
                    self.adverts.append(advert)

    def _on_arp(self, frame: bytes, when: float) -> None:
        arp = parse_arp(frame)
        if arp is None or arp.sender_ip not in self._watched:
            return
        if arp.op == ARP_REPLY and arp.target_ip == self.source:
            self.replies.append((when, arp.sender_ip, arp.sender_mac))

    def run(self, duration: float) -> float:
        start = time.time()
        end = start + duration
        due = start
        print("listening", flush=True)
        while not self.stopping:
            now = time.time()
            if now >= end:
                break
            if now >= due:
                self.sends.append(time.time())
                for frame in self.requests:
                    self.arp.send(frame)
                due += self.interval
                if due < now:  # fell behind (a stalled observer): the window just grows
                    due = now + self.interval
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([self.arp, self.ip], [], [], max(0.0, due - now))
                for s in ready:
                    self._drain(s)
        # The last window gets its full length, then whatever is still queued.
        until = time.time() + self.interval
        while (left := until - time.time()) > 0:
            ready, _, _ = select.select([self.arp, self.ip], [], [], left)
            for s in ready:
                self._drain(s)
        self._drain(self.arp)
        self._drain(self.ip)
        self.drops = {"arp": _drops(self.arp), "ip": _drops(self.ip)}
        return start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--interface", default="eth0")
    parser.add_argument("--source", required=True, help="our IPv4 address on the interface")
    parser.add_argument("--vips", required=True, help="comma-separated IPv4 VIPs to probe")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    vips = [str(ipaddress.IPv4Address(v.strip())) for v in args.vips.split(",") if v.strip()]
    observer = Observer(args.interface, args.source, vips, args.interval)

    def stop(_sig: int, _frame: object) -> None:
        observer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    start = observer.run(args.duration)
    result = summarise(
        observer.sends,
        observer.replies,
        observer.adverts,
        vips,
        args.interval,
        start,
        observer.drops,
    )
    result["observer"] = {"interface": args.interface, "mac": mac_text(observer.mac)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    totals, adverts = result["totals"], result["adverts"]
    print(
        f"samples={result['sends']} per-VIP 0/1/2+={totals['0']}/{totals['1']}/{totals['2+']} "
        f"adverts={adverts['raw']} transitions={adverts['transitions']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

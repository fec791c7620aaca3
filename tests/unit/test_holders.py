"""The VIP-holder observer (tests/support/holders.py): its frames and its summaries, without
sockets. The netns load test trusts these figures, so they must be able to say "split
brain" (two MACs in one sample, the advertising source switching) and "gap" (no MAC)."""

from __future__ import annotations

import socket
import struct

from tests.support import holders as h

MAC1, MAC2, ME = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:09"
LB1, LB2 = "198.18.20.11", "198.18.20.12"


def arp_reply(sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    ether = h.mac_bytes(target_mac) + h.mac_bytes(sender_mac) + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, h.ARP_REPLY)
    arp += h.mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
    arp += h.mac_bytes(target_mac) + socket.inet_aton(target_ip)
    return ether + arp + b"\x00" * 18  # padded to the Ethernet minimum, as on the wire


def vrrp_frame(src: str, vrid: int, priority: int, centis: int, mac: str = MAC1) -> bytes:
    ether = bytes.fromhex("01005e000012") + h.mac_bytes(mac) + b"\x08\x00"
    vrrp = bytes([0x31, vrid, priority, 1, centis >> 8, centis & 0xFF, 0, 0])
    vrrp += socket.inet_aton("198.19.0.0")
    ip = bytes([0x45, 0xC0]) + struct.pack("!H", 20 + len(vrrp)) + b"\x00" * 4
    ip += bytes([255, 112, 0, 0]) + socket.inet_aton(src) + socket.inet_aton("224.0.0.18")
    return ether + ip + vrrp


def test_an_arp_request_is_a_broadcast_who_has_from_us() -> None:
    frame = h.arp_request(h.mac_bytes(ME), "198.18.20.9", "198.19.0.7")
    assert frame[:6] == b"\xff" * 6 and len(frame) == 42
    arp = h.parse_arp(frame)
    assert arp == h.Arp(h.ARP_REQUEST, ME, "198.18.20.9", "00:00:00:00:00:00", "198.19.0.7")


def test_an_arp_reply_names_the_holder() -> None:
    arp = h.parse_arp(arp_reply(MAC2, "198.19.0.7", ME, "198.18.20.9"))
    assert arp == h.Arp(h.ARP_REPLY, MAC2, "198.19.0.7", ME, "198.18.20.9")
    assert h.parse_arp(vrrp_frame(LB1, 51, 150, 10)) is None
    assert h.parse_arp(arp_reply(MAC2, "198.19.0.7", ME, "198.18.20.9")[:30]) is None


def test_a_vrrpv3_advert_is_read_with_its_interval_in_centiseconds() -> None:
    advert = h.parse_vrrp(vrrp_frame(LB2, 77, 100, 2, MAC2), 12.5)
    assert advert == h.Advert(12.5, LB2, MAC2, 77, 100, 0.02, 3)
    assert h.parse_vrrp(vrrp_frame(LB1, 77, 150, 10), 0.0).interval == 0.1  # type: ignore[union-attr]
    udp = bytearray(vrrp_frame(LB1, 77, 150, 10))
    udp[14 + 9] = 17
    assert h.parse_vrrp(bytes(udp), 0.0) is None


def test_replies_count_in_the_window_they_arrived_in() -> None:
    sends = [10.0, 10.02, 10.04, 10.06]
    replies = [
        (9.99, "v", MAC1),  # before the first probe: no sample
        (10.001, "v", MAC1),
        (10.021, "v", MAC1),
        (10.022, "v", MAC2),  # both answer in sample 1: split brain
        # sample 2: nobody
        (10.07, "v", MAC1),  # the last window runs to the end of the capture
        (10.07, "other", MAC1),  # a VIP not watched
    ]
    samples = h.assign(sends, replies, ["v"])
    assert samples == {"v": [{MAC1}, {MAC1, MAC2}, set(), {MAC1}]}
    summary = h.summarise_samples(sends, samples, start=10.0)["v"]
    assert summary["counts"] == {"0": 1, "1": 2, "2+": 1}
    assert summary["bad"] == [{"t": 0.02, "macs": [MAC1, MAC2]}, {"t": 0.04, "macs": []}]
    assert [c["macs"] for c in summary["holder_changes"]] == [[MAC1, MAC2], [], [MAC1]]
    assert summary["macs"] == {MAC1: 3, MAC2: 1}


def test_one_steady_master_has_no_transitions() -> None:
    adverts = [h.Advert(i * 0.1, LB1, MAC1, 77, 150, 0.1, 3) for i in range(50)]
    adverts.append(h.Advert(2.0, LB2, MAC2, 99, 100, 0.1, 3))  # another VRID is apart
    got = h.summarise_adverts(adverts, start=0.0)
    assert got["77"]["transitions"] == 0
    assert got["77"]["first_source"] == LB1
    assert got["77"]["sources"][LB1]["max_gap"] == 0.1
    assert got["99"]["transitions"] == 0


def test_split_brain_counts_every_switch_and_a_resign_is_not_a_source() -> None:
    a = [
        h.Advert(0.0, LB1, MAC1, 77, 150, 0.1, 3),
        h.Advert(0.1, LB1, MAC1, 77, 150, 0.1, 3),
        h.Advert(0.5, LB1, MAC1, 77, 150, 0.1, 3),  # a 0.4 s silence: lb2 took over
        h.Advert(0.45, LB2, MAC2, 77, 100, 0.1, 3),
        h.Advert(0.55, LB2, MAC2, 77, 100, 0.1, 3),
        h.Advert(0.6, LB1, MAC1, 77, 150, 0.1, 3),  # both master: interleaved
        h.Advert(0.65, LB2, MAC2, 77, 0, 0.1, 3),  # lb2 resigns
        h.Advert(0.7, LB1, MAC1, 77, 150, 0.1, 3),
    ]
    got = h.summarise_adverts(a, start=0.0)["77"]
    assert got["adverts"] == 8
    assert got["transitions"] == 4  # lb1>lb2 (0.45), >lb1 (0.5), >lb2 (0.55), >lb1 (0.6)
    assert [t["to"] for t in got["transition_times"]] == [LB2, LB1, LB2, LB1]
    assert got["resigns"] == [{"t": 0.65, "source": LB2}]
    assert got["sources"][LB1]["max_gap"] == 0.4
    assert got["sources"][LB2]["priorities"] == [100, 0]


def test_the_whole_summary_adds_up() -> None:
    sends = [0.0, 0.02, 0.04]
    replies = [(0.001, "a", MAC1), (0.021, "a", MAC1), (0.041, "a", MAC1), (0.001, "b", MAC1)]
    adverts = [h.Advert(0.01, LB1, MAC1, 77, 150, 0.02, 3)]
    got = h.summarise(sends, replies, adverts, ["a", "b"], 0.02, 0.0)
    assert got["totals"] == {"0": 2, "1": 4, "2+": 0}
    assert got["vips"]["b"]["counts"] == {"0": 2, "1": 1, "2+": 0}
    assert got["adverts"] == {
        "raw": 1,
        "transitions": 0,
        "by_vrid": h.summarise_adverts(adverts, 0.0),
    }
    assert got["max_send_gap"] == 0.02


def run_bpf(program: bytes, frame: bytes) -> int:
    """The four classic BPF instructions the ARP socket's filter uses, interpreted."""
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack("!I", frame[k : k + 4])[0]
        elif code == 0x28:
            acc = struct.unpack("!H", frame[k : k + 2])[0]
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x06:
            return int(k)
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")
        pc += 1


def test_the_arp_socket_keeps_frames_to_us_and_drops_the_gratuitous_flood() -> None:
    program = h.to_mac_filter(h.mac_bytes(ME))
    to_us = arp_reply(MAC1, "198.19.0.7", ME, "198.18.20.9")
    garp = h.arp_request(h.mac_bytes(MAC1), "198.19.0.7", "198.19.0.7")  # broadcast
    near = arp_reply(MAC1, "198.19.0.7", "02:00:00:00:01:09", "198.18.20.9")  # last 4 differ
    far = arp_reply(MAC1, "198.19.0.7", "12:00:00:00:00:09", "198.18.20.9")  # first 2 differ
    assert run_bpf(program, to_us) > len(to_us)
    assert [run_bpf(program, f) for f in (garp, near, far)] == [0, 0, 0]

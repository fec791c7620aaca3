"""keepalived's adverts, captured live with tcpdump: our codec decodes them to what keepalived
was configured with, and encodes the same fields to the same bytes.
keepalived 2.2.7 only sends the pseudo-header checksum (it has no RFC 9568 VRRPv2-style
option), so the other form is checked in the unit tests against scapy's checksum.

With UPDATE_GOLDEN=1 the captures are written to tests/unit/golden/vrrp/ for the unit tests.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ha_lan import Keepalived, Lan, keepalived_conf, tcpdump
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

from appliance.ha import vrrp

GOLDEN = Path(__file__).parents[2] / "unit" / "golden" / "vrrp"

CASES = {
    "v4_pseudo": {
        "vrid": 51,
        "priority": 150,
        "advert_int": 0.1,
        "as_v2": False,
        "vips": ["198.18.20.100", "198.18.20.101"],
    },
    "v4_one": {
        "vrid": 52,
        "priority": 120,
        "advert_int": 0.5,
        "as_v2": False,
        "vips": ["198.18.20.102"],
    },
    "v6": {
        "vrid": 53,
        "priority": 200,
        "advert_int": 0.25,
        "as_v2": False,
        "vips": ["fd00:198:18:20::100", "fd00:198:18:20::101"],
    },
}


def _captures(pcap: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for frame in rdpcap(str(pcap)):
        if IP in frame and frame[IP].proto == vrrp.PROTO_VRRP:
            ip = frame[IP]
            out.append(
                {
                    "family": 4,
                    "source": ip.src,
                    "destination": ip.dst,
                    "ttl": ip.ttl,
                    "ip_packet": bytes(ip).hex(),
                    "vrrp": bytes(ip.payload).hex(),
                }
            )
        elif IPv6 in frame and frame[IPv6].nh == vrrp.PROTO_VRRP:
            ip6 = frame[IPv6]
            out.append(
                {
                    "family": 6,
                    "source": ip6.src,
                    "destination": ip6.dst,
                    "ttl": ip6.hlim,
                    "vrrp": bytes(ip6.payload).hex(),
                }
            )
    return out


def test_keepalived_adverts_round_trip(ha_lan: Lan, tmp_path: Path) -> None:
    host = ha_lan.add_host("k", 1)
    observer = ha_lan.add_host("o", 9)
    ha_lan.wait_link_local(host)
    capture = tcpdump(
        observer, tmp_path / "c.pcap", "ip proto 112 or ip6 proto 112", tmp_path / "tcpdump.log"
    )
    peers = []
    try:
        for name, case in CASES.items():
            conf = keepalived_conf(
                name=name,
                interface="eth0",
                vrid=case["vrid"],
                priority=case["priority"],
                advert_int=case["advert_int"],
                vips=case["vips"],
                checksum_as_v2=case["as_v2"],
            )
            peers.append(Keepalived(host, conf, tmp_path, f"g{case['vrid']}"))
        time.sleep(2.0)
    finally:
        for k in peers:
            k.stop()  # SIGTERM: each sends its priority-0 advert
        time.sleep(0.3)
        capture.stop()
    logs = "\n".join(k.child.output() for k in peers)
    assert "checksum" not in logs.lower(), logs

    packets = _captures(tmp_path / "c.pcap")
    for name, case in CASES.items():
        mine = [p for p in packets if bytes.fromhex(str(p["vrrp"]))[1] == case["vrid"]]
        running = [p for p in mine if bytes.fromhex(str(p["vrrp"]))[2] != 0]
        stopping = [p for p in mine if bytes.fromhex(str(p["vrrp"]))[2] == 0]
        assert running and stopping, f"{name}: captured {len(running)}+{len(stopping)} adverts"
        for label, packet, priority in (
            ("", running[0], case["priority"]),
            ("_stop", stopping[-1], 0),
        ):
            family = 4 if "." in case["vips"][0] else 6
            expect = {
                "vrid": case["vrid"],
                "priority": priority,
                "interval_cs": round(case["advert_int"] * 100),
                "addresses": case["vips"],
                "pseudo_header": not case["as_v2"],
            }
            raw = bytes.fromhex(str(packet["vrrp"]))
            got = vrrp.decode(
                raw,
                family=family,
                source=str(packet["source"]),
                destination=str(packet["destination"]),
                ttl=int(packet["ttl"]),
            )
            assert got.advert == vrrp.Advert(
                expect["vrid"], priority, expect["interval_cs"], tuple(case["vips"]), family
            )
            assert got.pseudo_header == expect["pseudo_header"]
            ours = vrrp.encode(
                got.advert,
                str(packet["source"]),
                str(packet["destination"]),
                pseudo_header=not case["as_v2"],
            )
            assert ours == raw, f"{name}{label}: ours {ours.hex()} keepalived {raw.hex()}"
            if os.environ.get("UPDATE_GOLDEN") == "1":
                GOLDEN.mkdir(parents=True, exist_ok=True)
                record = {
                    **packet,
                    "configured": expect,
                    "captured_from": "Debian keepalived 2.2.7, tcpdump in a namespace",
                }
                (GOLDEN / f"{name}{label}.json").write_text(json.dumps(record, indent=2) + "\n")

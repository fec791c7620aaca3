"""Hostile and broken adverts, built and sent by scapy from another host: each is dropped
and counted under its reason, none moves the master (they all claim priority 200), none
crashes the speaker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ha_lan import PYTHON, Lan, Ours, appliance_yaml, wait_for

VIP = "198.18.20.100"
REPEAT = 3

INJECT = """
import sys
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Raw
from scapy.sendrecv import sendp

GROUP = "224.0.0.18"
VIP = "198.18.20.100"
eth = Ether(dst="01:00:5e:00:00:12")


def ip(ttl=255):
    return IP(dst=GROUP, ttl=ttl, proto=112)


def v3(**kw):
    fields = dict(vrid=51, priority=200, ipcount=1, addrlist=[VIP], adv=10)
    fields.update(kw)
    return VRRPv3(**fields)


cases = {
    "ttl": eth / ip(ttl=64) / v3(),
    "checksum": eth / ip() / v3(chksum=0xDEAD),
    "version": eth / ip() / VRRP(vrid=51, priority=200, ipcount=1, addrlist=[VIP]),
    "type": eth / ip() / v3(type=2),
    "length": eth / ip() / v3(ipcount=3),
    "short": eth / ip() / Raw(b"\\x31\\x33"),
    "vrid": eth / ip() / v3(vrid=99),
    "garbage": eth / ip() / Raw(bytes(range(37))),
}
for name, frame in cases.items():
    if name in sys.argv[1:]:
        sendp([frame] * int(sys.argv[1]), iface="eth0", verbose=0)
"""


def test_bad_adverts_are_counted_and_ignored(ha_lan: Lan, tmp_path: Path) -> None:
    h1 = ha_lan.add_host("h1", 1)
    attacker = ha_lan.add_host("x", 7)
    inst = {
        "name": "vi-1",
        "vrid": 51,
        "priority": 100,
        "advert_interval": "100ms",
        "family": "IPv4",
    }
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", [VIP])
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-1": "master"})
        sent = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                attacker.ns,
                PYTHON,
                str(script),
                str(REPEAT),
                "ttl",
                "checksum",
                "version",
                "type",
                "length",
                "short",
                "vrid",
                "garbage",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr

        def counted() -> dict[str, int]:
            status = ours.status()
            totals = dict(status["dropped"])
            for reason, n in status["instances"][0]["dropped"].items():
                totals[reason] = totals.get(reason, 0) + n
            return totals

        # "garbage" starts with byte 0: version 0. VRRPv2 is version 2.
        want = {
            "ttl": REPEAT,
            "checksum": REPEAT,
            "version": 2 * REPEAT,
            "type": REPEAT,
            "length": REPEAT,
            "short": REPEAT,
            "vrid": REPEAT,
        }
        wait_for(f"drops counted as {want}", lambda: counted() == want)
        status = ours.status()
        # Attributed to the instance when the VRID byte names it, else to the interface.
        assert status["instances"][0]["dropped"]["ttl"] == REPEAT
        assert status["dropped"]["vrid"] == REPEAT
        time.sleep(0.3)  # a priority-200 advert that got through would have demoted us
        assert ours.states() == {"vi-1": "master"}
        assert ours.status()["instances"][0]["adverts_in"] == 0
        assert ours.child.proc.poll() is None
    finally:
        rc = ours.stop()
    assert rc == 0
    assert "Traceback" not in ours.child.output()


ACCEPTED = """
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3
from scapy.sendrecv import sendp
from scapy.utils import checksum

ip = IP(dst="224.0.0.18", ttl=255, proto=112)
v3 = VRRPv3(vrid=51, priority=200, ipcount=1, addrlist=["198.18.20.100"], adv=10, chksum=0)
raw = bytearray(bytes(ip / v3)[20:])  # addresses are packed only under an IP layer
assert len(raw) == 12, raw
raw[6:8] = checksum(bytes(raw)).to_bytes(2, "big")  # RFC 9568: no pseudo-header
sendp(Ether(dst="01:00:5e:00:00:12") / ip / bytes(raw), iface="eth0", verbose=0)
"""


def test_v2_style_checksum_is_accepted(ha_lan: Lan, tmp_path: Path) -> None:
    """An IPv4 advert checksummed without the pseudo-header (RFC 9568) is valid: a
    priority-200 one makes our master step down."""
    h1 = ha_lan.add_host("h1", 1)
    peer = ha_lan.add_host("x", 7)
    inst = {"name": "vi-1", "vrid": 51, "priority": 100, "advert_interval": "100ms"}
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", [VIP])
    script = tmp_path / "accepted.py"
    script.write_text(ACCEPTED)
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-1": "master"})
        sent = subprocess.run(
            ["ip", "netns", "exec", peer.ns, PYTHON, str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(
            "the advert demoted us",
            lambda: (
                "master -> backup (higher priority 200 from 198.18.20.7)" in ours.child.output()
            ),
        )
        assert ours.status()["instances"][0]["adverts_in"] == 1
        assert ours.status()["instances"][0]["dropped"] == {}
    finally:
        ours.stop()


INJECT6 = """
import sys
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3
from scapy.sendrecv import sendp

def v3(hlim=255, **kw):
    return (Ether(dst="33:33:00:00:00:12") / IPv6(src=sys.argv[1], dst="ff02::12", hlim=hlim)
            / VRRPv3(vrid=51, priority=200, ipcount=1, addrlist=["fd00:198:18:20::100"],
                     adv=10, **kw))

frames = [v3(hlim=64)] * 3 + [v3(chksum=0xBEEF)] * 3
sendp(frames, iface="eth0", verbose=0)
"""


def test_bad_ipv6_adverts_are_counted_and_ignored(ha_lan: Lan, tmp_path: Path) -> None:
    h1 = ha_lan.add_host("h1", 1)
    attacker = ha_lan.add_host("x", 7)
    inst = {
        "name": "vi-6",
        "vrid": 51,
        "priority": 100,
        "advert_interval": "100ms",
        "family": "IPv6",
    }
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", ["fd00:198:18:20::100"])
    script = tmp_path / "inject6.py"
    script.write_text(INJECT6)
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-6": "master"})
        source = ha_lan.wait_link_local(attacker)
        sent = subprocess.run(
            ["ip", "netns", "exec", attacker.ns, PYTHON, str(script), source],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(
            "drops counted",
            lambda: ours.status()["instances"][0]["dropped"] == {"ttl": 3, "checksum": 3},
        )
        time.sleep(0.3)
        assert ours.states() == {"vi-6": "master"}
    finally:
        rc = ours.stop()
    assert rc == 0

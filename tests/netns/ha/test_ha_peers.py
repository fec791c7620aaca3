"""A stranger on the LAN (a third namespace, scapy) sends valid priority-200 adverts for
our VRID. With `peers` configured the master stays master (the VIP stays in `ip addr`, no
transition) and the adverts are counted as not_a_peer; without peers the same adverts
demote it (which shows the first half can fail)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ha_lan import PYTHON, Host, Lan, Ours, appliance_yaml, wait_for

VIP = "198.18.20.100"
COUNT = 10

STRANGER = """
import sys
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3
from scapy.sendrecv import sendp
from scapy.utils import checksum

ip = IP(dst="224.0.0.18", ttl=255, proto=112)
v3 = VRRPv3(vrid=51, priority=200, ipcount=1, addrlist=["198.18.20.100"], adv=10, chksum=0)
raw = bytearray(bytes(ip / v3)[20:])
raw[6:8] = checksum(bytes(raw)).to_bytes(2, "big")  # RFC 9568 form, which we accept
frame = Ether(dst="01:00:5e:00:00:12") / ip / bytes(raw)
sendp([frame] * int(sys.argv[1]), iface="eth0", inter=0.05, verbose=0)
"""


def _run_stranger(stranger: Host, tmp_path: Path) -> None:
    script = tmp_path / "stranger.py"
    script.write_text(STRANGER)
    sent = subprocess.run(
        ["ip", "netns", "exec", stranger.ns, PYTHON, str(script), str(COUNT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr


def _start(lan: Lan, tmp_path: Path, peers: list[str]) -> tuple[Host, Host, Ours]:
    h1 = lan.add_host("h1", 1)
    stranger = lan.add_host("x", 7)
    inst: dict[str, object] = {
        "name": "vi-1",
        "vrid": 51,
        "priority": 100,
        "advert_interval": "100ms",
    }
    if peers:
        inst["peers"] = peers
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", [VIP])
    return h1, stranger, ours


def test_a_stranger_cannot_demote_a_master_with_peers(ha_lan: Lan, tmp_path: Path) -> None:
    h1, stranger, ours = _start(ha_lan, tmp_path, ["198.18.20.2"])  # lb2, absent here
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-1": "master"})
        wait_for("the VIP on h1", lambda: VIP in h1.addresses())
        before = ours.status()["instances"][0]
        _run_stranger(stranger, tmp_path)
        wait_for(
            "the stranger's adverts counted",
            lambda: ours.status()["instances"][0]["dropped"].get("not_a_peer") == COUNT,
        )
        time.sleep(0.3)  # master-down would have followed a demotion by now
        after = ours.status()["instances"][0]
        assert after["state"] == "master"
        # no transition: the same reason, the same moment (since is wall-clock, recomputed)
        assert after["reason"] == before["reason"]
        assert abs(after["since"] - before["since"]) < 0.05
        assert after["adverts_in"] == 0
        assert after["peers"] == ["198.18.20.2"]
        assert VIP in h1.addresses()
        assert "master -> " not in ours.child.output()
    finally:
        rc = ours.stop()
    assert rc == 0


def test_without_peers_the_stranger_demotes_the_master(ha_lan: Lan, tmp_path: Path) -> None:
    h1, stranger, ours = _start(ha_lan, tmp_path, [])
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-1": "master"})
        wait_for("the VIP on h1", lambda: VIP in h1.addresses())
        _run_stranger(stranger, tmp_path)
        wait_for(
            "the stranger demoted us",
            lambda: (
                "master -> backup (higher priority 200 from 198.18.20.7)" in ours.child.output()
            ),
        )
        wait_for("the VIP gone from h1", lambda: VIP not in h1.addresses())
        assert ours.status()["instances"][0]["dropped"].get("not_a_peer") is None
    finally:
        ours.stop()


def test_adverts_the_kernel_refuses_are_reported_once_and_their_return(
    ha_lan: Lan, tmp_path: Path
) -> None:
    """A host firewall dropping VRRP on output: every send fails (EPERM). The log says so
    once, not at every interval; the status counts them; when the rule goes the adverts
    are back, and the log says that too."""
    h1 = ha_lan.add_host("h1", 1)
    inst = {"name": "vi-1", "vrid": 51, "priority": 100, "advert_interval": "100ms"}
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", [VIP])
    refused = "adverts are not going out (send to 224.0.0.18: [Errno 1]"
    try:
        wait_for("ours master", lambda: ours.states() == {"vi-1": "master"})
        h1.run("nft", "add table inet aha_out")
        h1.run("nft", "add chain inet aha_out out { type filter hook output priority 0; }")
        h1.run("nft", "add rule inet aha_out out ip protocol 112 drop")
        wait_for("10 refused adverts counted",
                 lambda: ours.status()["instances"][0]["dropped"].get("send", 0) >= 10)  # fmt: skip
        assert ours.child.output().count(refused) == 1, ours.child.output()
        h1.run("nft", "delete table inet aha_out")
        back = "adverts to 224.0.0.18 go out again, after "
        wait_for("the log saying they go out again", lambda: back in ours.child.output())
        sent = ours.status()["instances"][0]["adverts_out"]
        wait_for("adverts counted as sent",
                 lambda: ours.status()["instances"][0]["adverts_out"] > sent + 3)  # fmt: skip
    finally:
        ours.stop()
    assert ours.child.output().count(refused) == 1

"""Two appliance speakers on a LAN, a client and an observer (tcpdump): failover by SIGKILL,
hand-over by SIGTERM (priority 0), and Fault when the master's link goes down."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from ha_lan import (
    Lan,
    Ours,
    appliance_yaml,
    fetch,
    instance,
    pair,
    tcpdump,
    wait_for,
    web_server,
)

VIP = "198.18.20.100"


def test_sigkill_master_backup_takes_vip(ha_lan: Lan, tmp_path: Path) -> None:
    a, b, h1, h2, client = pair(ha_lan, tmp_path, VIP)
    servers = [web_server(h1, tmp_path, "h1"), web_server(h2, tmp_path, "h2")]
    try:
        wait_for(
            "a master, b backup",
            lambda: a.states() == {"vi-1": "master"} and b.states() == {"vi-1": "backup"},
        )
        wait_for("VIP on h1", lambda: VIP in h1.addresses())
        assert VIP not in h2.addresses()
        wait_for("h1 answers on the VIP", lambda: fetch(client, VIP) == "h1")
        assert client.neighbour_mac(VIP) == h1.mac()
        wait_for(
            "b sees a as master", lambda: b.status()["instances"][0]["master"] == "198.18.20.1"
        )

        a.stop(signal.SIGKILL)
        wait_for("b master", lambda: b.states() == {"vi-1": "master"})
        wait_for("VIP on h2", lambda: VIP in h2.addresses())
        # The GARP burst moved the client's neighbour entry to h2's MAC; traffic resumes.
        wait_for("client neighbour on h2's MAC", lambda: client.neighbour_mac(VIP) == h2.mac())
        wait_for("h2 answers on the VIP", lambda: fetch(client, VIP) == "h2")
        wait_for("b's status says it holds the VIP", lambda: b.status()["owners"] == {VIP: "vi-1"})
        status = b.status()
        assert status["instances"][0]["master"] == "198.18.20.2"
        assert status["instances"][0]["adverts_in"] > 0
    finally:
        b.stop()
        for s in servers:
            s.stop()
    assert "Traceback" not in a.child.output() + b.child.output()
    assert VIP not in h2.addresses()  # released on SIGTERM


def test_sigterm_sends_priority_zero_and_hands_over(ha_lan: Lan, tmp_path: Path) -> None:
    a, b, h1, h2, client = pair(ha_lan, tmp_path, VIP)
    observer = ha_lan.add_host("ob", 8)
    pcap = tmp_path / "vrrp.pcap"
    dump = tcpdump(observer, pcap, "ip proto 112", tmp_path / "tcpdump.log")
    try:
        wait_for(
            "a master",
            lambda: a.states() == {"vi-1": "master"} and b.states() == {"vi-1": "backup"},
        )
        time.sleep(0.3)
        assert a.stop(signal.SIGTERM) == 0
        wait_for("b master", lambda: b.states() == {"vi-1": "master"})
        wait_for(
            "b took over because a resigned",
            lambda: b.status()["instances"][0]["reason"] == "master resigned (priority 0)",
        )
        wait_for("VIP on h2", lambda: VIP in h2.addresses())
        assert VIP not in h1.addresses()
        wait_for("client neighbour on h2's MAC", lambda: client.neighbour_mac(VIP) == h2.mac())
    finally:
        b.stop()
        time.sleep(0.2)
        dump.stop()
    from scapy.layers.inet import IP
    from scapy.layers.vrrp import VRRPv3
    from scapy.utils import rdpcap

    adverts = [(p[IP].src, p[VRRPv3].priority) for p in rdpcap(str(pcap)) if VRRPv3 in p]
    assert ("198.18.20.1", 0) in adverts, adverts  # scapy saw a's resignation
    resigned = adverts.index(("198.18.20.1", 0))
    # After the resignation, b is the one advertising with its own priority.
    assert ("198.18.20.2", 100) in adverts[resigned:]
    assert ("198.18.20.1", 150) not in adverts[resigned:]


def test_link_down_master_goes_fault_backup_takes_over(ha_lan: Lan, tmp_path: Path) -> None:
    a, b, h1, h2, _client = pair(ha_lan, tmp_path, VIP)
    try:
        wait_for(
            "a master",
            lambda: a.states() == {"vi-1": "master"} and b.states() == {"vi-1": "backup"},
        )
        wait_for("VIP on h1", lambda: VIP in h1.addresses())
        h1.set_link(False)
        wait_for("a fault", lambda: a.states() == {"vi-1": "fault"})
        wait_for("b master", lambda: b.states() == {"vi-1": "master"})
        wait_for("VIP on h2 only", lambda: VIP in h2.addresses() and VIP not in h1.addresses())
        assert a.status()["owners"] == {}
        h1.set_link(True)
        # Back up, a (150) preempts b (100) again.
        wait_for(
            "a master again",
            lambda: a.states() == {"vi-1": "master"} and b.states() == {"vi-1": "backup"},
        )
        wait_for("VIP back on h1", lambda: VIP in h1.addresses() and VIP not in h2.addresses())
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.child.output() + b.child.output()


def test_active_active_split_by_pools(ha_lan: Lan, tmp_path: Path) -> None:
    """Two instances, each owning one pool's VIPs: each host masters one, and when one host
    dies the other holds both groups."""
    h1, h2 = ha_lan.add_host("h1", 1), ha_lan.add_host("h2", 2)
    vip_a, vip_b = "198.18.20.100", "198.18.20.120"  # pools lan4 and lan4b

    def instances(p1: int, p2: int) -> list[dict[str, object]]:
        return [
            {
                "name": "vi-a",
                "vrid": 51,
                "priority": p1,
                "advert_interval": "100ms",
                "pools": ["lan4"],
            },
            {
                "name": "vi-b",
                "vrid": 52,
                "priority": p2,
                "advert_interval": "100ms",
                "pools": ["lan4b"],
            },
        ]

    a = Ours(h1, appliance_yaml(tmp_path, instances(150, 100)), tmp_path, "a", [vip_a, vip_b])
    b = Ours(h2, appliance_yaml(tmp_path, instances(100, 150)), tmp_path, "b", [vip_a, vip_b])
    try:
        wait_for(
            "split",
            lambda: (
                a.states() == {"vi-a": "master", "vi-b": "backup"}
                and b.states() == {"vi-a": "backup", "vi-b": "master"}
            ),
        )
        wait_for(
            "VIPs split",
            lambda: (
                a.status()["owners"] == {vip_a: "vi-a"} and b.status()["owners"] == {vip_b: "vi-b"}
            ),
        )
        assert vip_a in h1.addresses() and vip_b not in h1.addresses()
        assert vip_b in h2.addresses() and vip_a not in h2.addresses()
        a.stop(signal.SIGKILL)
        wait_for("b holds both", lambda: b.status()["owners"] == {vip_a: "vi-a", vip_b: "vi-b"})
        assert {vip_a, vip_b} <= h2.addresses()
    finally:
        b.stop()
    assert "Traceback" not in a.child.output() + b.child.output()


def test_garp_burst_and_refresh(ha_lan: Lan, tmp_path: Path) -> None:
    """A takeover sends a burst of gratuitous ARPs, then one every `garp_refresh`;
    scapy checks each is a proper announcement (request, sender = target = VIP)."""
    h1 = ha_lan.add_host("h1", 1)
    observer = ha_lan.add_host("ob", 8)
    pcap = tmp_path / "arp.pcap"
    dump = tcpdump(observer, pcap, "arp", tmp_path / "tcpdump.log")
    yaml = appliance_yaml(tmp_path, instance(150), garp_count=4, garp_refresh="200ms")
    a = Ours(h1, yaml, tmp_path, "a", [VIP])
    try:
        wait_for("a master", lambda: a.states() == {"vi-1": "master"})
        time.sleep(1.1)
    finally:
        a.stop()
        time.sleep(0.1)
        dump.stop()
    from scapy.layers.l2 import ARP
    from scapy.utils import rdpcap

    garps = [
        float(p.time)
        for p in rdpcap(str(pcap))
        if ARP in p
        and p[ARP].op == 1
        and p[ARP].psrc == VIP == p[ARP].pdst
        and p[ARP].hwsrc == h1.mac()
        and p.dst == "ff:ff:ff:ff:ff:ff"
    ]
    # A burst of 4, then about 5 refreshes in 1.1 s; never more than one per 10 ms burst gap.
    assert len(garps) >= 4 + 3, garps
    burst_end = garps[3]
    assert all(t > burst_end for t in garps[4:])

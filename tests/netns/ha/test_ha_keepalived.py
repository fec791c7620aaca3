"""Our speaker and Debian's keepalived on one LAN, both directions: the higher priority
wins, preemption works, priority 0 is honoured, and keepalived logs no complaint."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from ha_lan import (
    Host,
    Keepalived,
    Lan,
    Ours,
    appliance_yaml,
    fetch,
    keepalived_complaints,
    keepalived_conf,
    keepalived_state,
    wait_for,
    web_server,
)


def heard_priority_0(log: str, instance: str) -> bool:
    """keepalived logged, for `instance`, the priority-0 advert it got (its wording varies
    between versions: "(VI_1) Backup received priority 0 advertisement" in 2.x)."""
    return re.search(rf"\({re.escape(instance)}\)[^\n]*\bpriority 0\b", log, re.I) is not None


VIP4 = "198.18.20.100"
VIP6 = "fd00:198:18:20::100"


def _ours(host: Host, tmp: Path, tag: str, priority: int, family: str, vip: str) -> Ours:
    inst = {
        "name": "vi-1",
        "vrid": 51,
        "priority": priority,
        "advert_interval": "100ms",
        "family": family,
    }
    return Ours(host, appliance_yaml(tmp, [inst]), tmp, tag, [vip])


def _keepalived(host: Host, tmp: Path, tag: str, priority: int, vip: str) -> Keepalived:
    conf = keepalived_conf(
        name="VI_1", interface="eth0", vrid=51, priority=priority, advert_int=0.1, vips=[vip]
    )
    return Keepalived(host, conf, tmp, tag)


def _state(o: Ours) -> str | None:
    return o.states().get("vi-1")


@pytest.mark.parametrize(("family", "vip"), [("IPv4", VIP4), ("IPv6", VIP6)])
def test_ours_higher_priority_than_keepalived(
    ha_lan: Lan, tmp_path: Path, family: str, vip: str
) -> None:
    h1, h2 = ha_lan.add_host("h1", 1), ha_lan.add_host("h2", 2)
    client = ha_lan.add_host("cl", 9)
    servers = [web_server(h1, tmp_path, "h1"), web_server(h2, tmp_path, "h2")]
    k = _keepalived(h2, tmp_path, "k", 100, vip)
    ours = _ours(h1, tmp_path, "o1", 150, family, vip)
    try:
        wait_for(
            "ours master, keepalived backup",
            lambda: _state(ours) == "master" and keepalived_state(k, "VI_1") == "BACKUP",
        )
        wait_for("VIP on h1 only", lambda: vip in h1.addresses() and vip not in h2.addresses())
        wait_for("h1 answers", lambda: fetch(client, vip) == "h1")

        ours.stop(signal.SIGKILL)  # vanishes without a word: keepalived's timer runs out
        wait_for("keepalived master", lambda: keepalived_state(k, "VI_1") == "MASTER")
        wait_for("h2 answers", lambda: fetch(client, vip) == "h2")
        assert client.neighbour_mac(vip) == h2.mac()

        # Ours comes back and preempts keepalived (150 > 100).
        ours = _ours(h1, tmp_path, "o2", 150, family, vip)
        wait_for(
            "ours preempts",
            lambda: _state(ours) == "master" and keepalived_state(k, "VI_1") == "BACKUP",
        )
        wait_for("VIP back on h1 only", lambda: vip in h1.addresses() and vip not in h2.addresses())
        wait_for("client neighbour on h1's MAC", lambda: client.neighbour_mac(vip) == h1.mac())
        wait_for("h1 answers again", lambda: fetch(client, vip) == "h1")

        # SIGTERM: our priority-0 advert makes keepalived take over after its skew time.
        assert ours.stop(signal.SIGTERM) == 0
        wait_for("keepalived master", lambda: keepalived_state(k, "VI_1") == "MASTER")
        assert heard_priority_0(k.child.output(), "VI_1"), k.child.output()[-2000:]
    finally:
        ours.stop()
        k.stop()
        for s in servers:
            s.stop()
    assert keepalived_complaints(k) == []
    assert "Traceback" not in ours.child.output()


@pytest.mark.parametrize(("family", "vip"), [("IPv4", VIP4), ("IPv6", VIP6)])
def test_keepalived_higher_priority_than_ours(
    ha_lan: Lan, tmp_path: Path, family: str, vip: str
) -> None:
    h1, h2 = ha_lan.add_host("h1", 1), ha_lan.add_host("h2", 2)
    ll1 = ha_lan.wait_link_local(h1)
    k = _keepalived(h1, tmp_path, "k1", 150, vip)
    ours = _ours(h2, tmp_path, "o", 100, family, vip)
    k2: Keepalived | None = None
    try:
        wait_for(
            "keepalived master, ours backup",
            lambda: keepalived_state(k, "VI_1") == "MASTER" and _state(ours) == "backup",
        )
        master = h1.address4 if family == "IPv4" else ll1
        wait_for(
            "ours sees keepalived as master",
            lambda: ours.status()["instances"][0]["master"] == master,
        )
        assert vip not in h2.addresses()

        k.kill_vrrp()  # SIGKILL keepalived's VRRP process
        wait_for("ours master", lambda: _state(ours) == "master")
        wait_for("VIP on h2", lambda: vip in h2.addresses())
        k.stop()

        # keepalived comes back with 150 and preempts ours.
        k2 = _keepalived(h1, tmp_path, "k2", 150, vip)
        wait_for(
            "keepalived preempts",
            lambda: keepalived_state(k2, "VI_1") == "MASTER" and _state(ours) == "backup",
        )
        wait_for("ours released the VIP", lambda: vip not in h2.addresses())

        # keepalived's SIGTERM sends priority 0: ours takes over after its skew time.
        k2.stop()
        wait_for("ours master", lambda: _state(ours) == "master")
        wait_for(
            "ours says why",
            lambda: ours.status()["instances"][0]["reason"] == "master resigned (priority 0)",
        )
        dropped = ours.status()["instances"][0]["dropped"]
        assert dropped == {}, dropped  # every keepalived advert passed our checks
    finally:
        ours.stop()
        k.stop()
        if k2 is not None:
            k2.stop()
    assert keepalived_complaints(k) == []
    assert k2 is not None
    assert keepalived_complaints(k2) == []
    assert "Traceback" not in ours.child.output()


def test_unicast_peers_with_keepalived(ha_lan: Lan, tmp_path: Path) -> None:
    """No multicast: adverts go to the configured peer, as keepalived's `unicast_peer`."""
    h1, h2 = ha_lan.add_host("h1", 1), ha_lan.add_host("h2", 2)
    conf = keepalived_conf(
        name="VI_1",
        interface="eth0",
        vrid=51,
        priority=100,
        advert_int=0.1,
        vips=[VIP4],
        unicast_src=h2.address4,
        unicast_peers=[h1.address4],
    )
    k = Keepalived(h2, conf, tmp_path, "k")
    inst = {
        "name": "vi-1",
        "vrid": 51,
        "priority": 150,
        "advert_interval": "100ms",
        "unicast_peers": [h2.address4],
    }
    ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o", [VIP4])
    try:
        wait_for(
            "ours master, keepalived backup",
            lambda: _state(ours) == "master" and keepalived_state(k, "VI_1") == "BACKUP",
        )
        # keepalived in unicast mode joins no multicast group: it stays backup only because
        # our unicast adverts reach it and pass its checks.
        wait_for("ours sent adverts", lambda: ours.status()["instances"][0]["adverts_out"] > 5)
        assert keepalived_state(k, "VI_1") == "BACKUP"
        assert VIP4 not in h2.addresses()
        ours.stop(signal.SIGTERM)
        wait_for("keepalived master", lambda: keepalived_state(k, "VI_1") == "MASTER")
        assert heard_priority_0(k.child.output(), "VI_1"), k.child.output()[-2000:]
        ours = Ours(h1, appliance_yaml(tmp_path, [inst]), tmp_path, "o2", [VIP4])
        wait_for(
            "ours preempts over unicast",
            lambda: _state(ours) == "master" and keepalived_state(k, "VI_1") == "BACKUP",
        )
        assert ours.status()["instances"][0]["adverts_in"] > 0  # keepalived's, unicast to us
    finally:
        ours.stop()
        k.stop()
    assert keepalived_complaints(k) == []

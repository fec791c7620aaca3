"""The VRRP filter table: golden text, the family rule, and nft's own syntax check."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import HaConfig, VrrpInstance
from appliance.ha import firewall
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden" / "vrrp"

HA = HaConfig(
    interface="eth0",
    instances=(
        VrrpInstance("a", 51, peers=("198.18.0.3",), unicast_peers=("198.18.0.2",)),
        VrrpInstance("b", 52, peers=("198.18.0.2",)),
        VrrpInstance("v6", 51, family="IPv6", peers=("fe80::2",)),
    ),
)


def test_peers_filter_matches_golden() -> None:
    assert_golden(GOLDEN / "firewall-peers.nft", firewall.render(HA))


def test_a_family_with_an_instance_without_peers_is_not_filtered() -> None:
    ha = HaConfig(interface="eth0", instances=(*HA.instances, VrrpInstance("open", 53)))
    assert firewall.family_peers(ha, "IPv4") is None
    assert firewall.family_peers(ha, "IPv6") == ("fe80::2",)
    text = firewall.render(ha)
    assert "ip saddr" not in text and "ip6 saddr != { fe80::2 }" in text
    assert "rule" not in firewall.render(
        HaConfig(interface="eth0", instances=(VrrpInstance("x", 1),))
    )


@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_nft_accepts_the_script() -> None:
    got = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=firewall.render(HA),
        capture_output=True,
        text=True,
        check=False,
    )
    if os.strerror(errno.EPERM) in got.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert got.returncode == 0, got.stderr

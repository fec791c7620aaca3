"""The IPVS program in `ipvsadm-restore` form and its nftables nat helper: golden files."""

from __future__ import annotations

from dataclasses import replace

from appliance.config import Pool
from appliance.dataplane.base import Ownership
from appliance.dataplane.ipvsrules import (
    entries,
    helper_delta,
    helper_elements,
    helper_script,
    restore_script,
)
from tests.unit.test_dataplane_nft import NODES, check_golden, sample


def test_restore_script_matches_golden() -> None:
    services = (*sample(), replace(sample()[0], vip="198.18.32.5", forwarding="dr"))
    check_golden("ipvs_restore.txt", restore_script(services))


def test_helper_table_matches_golden() -> None:
    services = (*sample(), replace(sample()[0], vip="198.18.32.5", forwarding="dr"))
    check_golden("ipvs_helper.nft", helper_script(helper_elements(services), "appliance_ipvs"))


def test_helper_delta_is_elements_only() -> None:
    before = helper_elements(sample())
    after = helper_elements((*sample()[1:], replace(sample()[0], source_ranges=("10.1.0.0/16",))))
    assert helper_delta(before, before, "t") == []
    assert helper_delta(before, after, "t") == [
        "add element inet t restricted4 { 198.18.32.1 . tcp . 80 }",
        "add element inet t allow4 { 198.18.32.1 . tcp . 80 . 10.1.0.0/16 }",
    ]


def test_forwarding_methods_always_explicit() -> None:
    for forwarding, fwd in (("nat", "masq"), ("dr", "droute"), ("tun", "tunnel")):
        _, dests = entries(replace(sample()[0], forwarding=forwarding))
        assert {d.fwd for d in dests.values()} == {fwd}
        assert {d.port for d in dests.values()} == {30080}
        assert set(dests) == {n.address for n in NODES}


def test_ownership_is_the_pool_ranges() -> None:
    import ipaddress

    pool = Pool(
        "lab",
        (
            (ipaddress.IPv4Address("198.18.32.0"), ipaddress.IPv4Address("198.18.32.127")),
            (
                ipaddress.IPv6Address("fd00:198:18:32::"),
                ipaddress.IPv6Address("fd00:198:18:32::ff"),
            ),
        ),
    )
    own = Ownership.of_pools([pool])
    assert own.owns("198.18.32.1") and own.owns("fd00:198:18:32::1")
    assert not own.owns("198.18.32.200") and not own.owns("10.0.0.1")
    assert not own.owns("not an address")

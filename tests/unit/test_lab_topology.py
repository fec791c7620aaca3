"""The lab's wiring and its LB hosts' config, without building anything."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from appliance.cluster.files import FilesSource
from appliance.config import load_config
from appliance.lab import topology
from appliance.lab.lab import EXAMPLES, lb_config

LAB_V4 = ipaddress.ip_network("198.18.0.0/15")
LAB_V6 = ipaddress.ip_network("fd00:198:18::/48")


def test_addresses_are_unique_and_only_from_the_lab_ranges() -> None:
    v4 = [ipaddress.ip_address(h.ipv4) for h in topology.HOSTS]
    v6 = [ipaddress.ip_address(h.ipv6) for h in topology.HOSTS]
    assert len(set(v4)) == len(v4) and len(set(v6)) == len(v6)
    assert all(a in LAB_V4 for a in v4) and all(a in LAB_V6 for a in v6)
    for r in topology.VIP_RANGES:
        net = ipaddress.ip_network(r)
        assert net.subnet_of(LAB_V4 if net.version == 4 else LAB_V6)  # type: ignore[arg-type]


def test_bridge_ports_fit_an_interface_name() -> None:
    assert all(len(h.name) <= 15 for h in topology.HOSTS)


def test_the_nodes_are_the_manifests_nodes() -> None:
    """The manifests' Nodes are the lab's nodes: the LB hosts send traffic to them."""
    state = FilesSource(EXAMPLES).load()
    manifests = {
        n.name: {a.address for a in n.addresses if a.type == "InternalIP"}
        for n in state.nodes.values()
    }
    lab = {h.name: {h.ipv4, h.ipv6} for h in topology.nodes()}
    assert manifests == lab


@pytest.mark.parametrize("lb", ["lb1", "lb2"])
def test_lb_config_is_accepted(lb: str, tmp_path: Path) -> None:
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(lb_config(topology.host(lb), EXAMPLES)))
    config = load_config(path)
    assert config.ha is not None
    assert {i.family for i in config.ha.instances} == {"IPv4", "IPv6"}


def test_lb1_outranks_lb2() -> None:
    prio = {
        lb.name: lb_config(lb, EXAMPLES)["ha"]["instances"][0]["priority"] for lb in topology.lbs()
    }
    assert prio["lb1"] > prio["lb2"]


def test_unknown_host_names_the_hosts() -> None:
    with pytest.raises(KeyError, match="node-1"):
        topology.host("node-9")

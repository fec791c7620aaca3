"""appliance.yaml: every key, every error message, errors collected, files and lines."""

from __future__ import annotations

import copy
import errno
import ipaddress
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import (
    ClusterConfig,
    ConfigError,
    DataplaneConfig,
    DnsConfig,
    HaConfig,
    HealthConfig,
    LabelRequirement,
    LabelSelector,
    Pool,
    TrackConfig,
    TrackInterface,
    VrrpInstance,
    WebConfig,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
    parse_range,
)

REPO = Path(__file__).resolve().parents[2]


def IP(text: str) -> Any:  # reads like the constructor it wraps
    return ipaddress.ip_address(text)


MINIMAL: dict[str, Any] = {
    "cluster": {"manifests": "/srv/manifests"},
    "pools": [{"name": "default", "addresses": ["198.18.100.0/28"]}],
}

# Every key of the schema, each set to the default config/types.py gives it.
EVERY_KEY_AT_DEFAULT = """
cluster:
  manifests: /srv/manifests
  load_balancer_class: null
  default_ip_family: IPv4
pools:
  - name: default
    addresses: [198.18.100.0/28]
    auto_assign: true
    avoid_buggy_ips: false
    namespaces: []
    service_selector: {match_labels: {}, match_expressions: []}
dataplane: {backend: auto, forwarding: nat, scheduler: rr, drain_timeout: 300s, interface: null}
ha:
  interface: null
  garp_count: 5
  garp_interval: 20ms
  garp_refresh: 0
  instances: []
dns:
  enabled: true
  listen: ["127.0.0.1:5353"]
  zones: [cluster.local]
  ttl: 5
  cluster_ips: false
health: {enabled: true, interval: 2s, timeout: 1s, rise: 2, fall: 3}
web:
  listen: "127.0.0.1:8080"
  basic_auth: {}
state_dir: /var/lib/appliance
"""

EVERY_KEY_CHANGED = """
cluster:
  kubeconfig: in-cluster
  load_balancer_class: appliance.io/lb
  default_ip_family: IPv6
pools:
  - name: web-1
    addresses: [198.18.100.0/28, "198.18.101.10-198.18.101.20", 198.18.102.7,
                "fd00:198:18:100::/120"]
    auto_assign: false
    avoid_buggy_ips: true
    namespaces: [shop, kube-system]
    service_selector:
      match_labels: {tier: web, app.kubernetes.io/name: shop}
      match_expressions:
        - {key: env, operator: In, values: [prod, stage]}
        - {key: canary, operator: DoesNotExist}
  - name: other
    addresses: [198.18.110.0/24]
dataplane: {backend: nftables, forwarding: dr, scheduler: mh, drain_timeout: 1m30s, interface: eth2}
ha:
  interface: eth1
  garp_count: 3
  garp_interval: 0.5
  garp_refresh: 1h
  instances:
    - name: VI_1
      vrid: 1
      priority: 254
      advert_interval: 40.95s
      preempt: false
      preempt_delay: 2.5s
      family: IPv4
      pools: [web-1]
      unicast_peers: [198.18.0.2, 198.18.0.3]
      v3_checksum_as_v2: true
    - name: vi-6
      vrid: 1
      advert_interval: 10ms
      family: IPv6
      unicast_peers: ["fd00:198:18:0:0::2"]
      v3_checksum_as_v2: false
dns:
  enabled: false
  listen: ["[::1]:53", "198.18.0.1:5353"]
  zones: [Cluster.Local., k8s.example.com]
  ttl: 2147483647
  cluster_ips: true
health: {enabled: false, interval: 500ms, timeout: 0.25, rise: 1, fall: 10}
web:
  listen: "[::]:8443"
  basic_auth: {username: admin, password: s3cret}
state_dir: /srv/appliance-state
"""


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `base` (MINIMAL) with the dotted path set; '[n]' indexes lists;
    the value DELETE removes the key."""
    data = copy.deepcopy(MINIMAL if base is None else base)
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        for index in filter(None, rest.replace("]", "").split("[")):
            parts.append(int(index))
    node: Any = data
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    elif isinstance(node, list) and parts[-1] == len(node):
        node.append(value)
    else:
        node[parts[-1]] = value
    return data


DELETE = object()


def errors_of(data: object) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# --- what is accepted -----------------------------------------------------------------------


def test_minimal_config_takes_every_default() -> None:
    config = parse_config(MINIMAL, "here.yaml")
    assert config.pools == (Pool("default", ((IP("198.18.100.0"), IP("198.18.100.15")),)),)
    assert config.cluster == ClusterConfig(manifests="/srv/manifests")
    assert config.dataplane == DataplaneConfig()
    assert config.ha == HaConfig()
    assert config.dns == DnsConfig()
    assert config.health == HealthConfig()
    assert config.web == WebConfig()
    assert config.state_dir == "/var/lib/appliance"
    assert config.source == "here.yaml"


def test_every_key_accepted_with_its_default() -> None:
    assert parse_config(yaml.safe_load(EVERY_KEY_AT_DEFAULT)) == parse_config(MINIMAL)


def test_dataplane_interface_defaults_to_the_ha_interface() -> None:
    """nftables dr forwards where the VIPs are announced unless told otherwise."""
    data = with_("dataplane", {"backend": "nftables", "forwarding": "dr"})
    data["ha"] = {"interface": "bond0"}
    assert parse_config(data).dataplane.interface == "bond0"
    data["dataplane"]["interface"] = "eth7"
    assert parse_config(data).dataplane.interface == "eth7"
    assert parse_config(MINIMAL).dataplane.interface is None


def test_every_key_accepted_with_another_value() -> None:
    c = parse_config(yaml.safe_load(EVERY_KEY_CHANGED))
    assert c.cluster == ClusterConfig(
        manifests=None,
        kubeconfig="in-cluster",
        load_balancer_class="appliance.io/lb",
        default_ip_family="IPv6",
    )
    web1, other = c.pools
    assert web1 == Pool(
        name="web-1",
        ranges=(
            (IP("198.18.100.0"), IP("198.18.100.15")),
            (IP("198.18.101.10"), IP("198.18.101.20")),
            (IP("198.18.102.7"), IP("198.18.102.7")),
            (IP("fd00:198:18:100::"), IP("fd00:198:18:100::ff")),
        ),
        auto_assign=False,
        avoid_buggy_ips=True,
        namespaces=("shop", "kube-system"),
        service_selector=LabelSelector(
            match_labels=(("tier", "web"), ("app.kubernetes.io/name", "shop")),
            match_expressions=(
                LabelRequirement("env", "In", ("prod", "stage")),
                LabelRequirement("canary", "DoesNotExist"),
            ),
        ),
    )
    assert other.ranges == ((IP("198.18.110.0"), IP("198.18.110.255")),)
    assert c.dataplane == DataplaneConfig("nftables", "dr", "mh", 90.0, "eth2")
    assert c.ha == HaConfig(
        interface="eth1",
        garp_count=3,
        garp_interval=0.5,
        garp_refresh=3600.0,
        instances=(
            VrrpInstance(
                name="VI_1",
                vrid=1,
                priority=254,
                advert_interval=40.95,
                preempt=False,
                preempt_delay=2.5,
                family="IPv4",
                pools=("web-1",),
                unicast_peers=("198.18.0.2", "198.18.0.3"),
                v3_checksum_as_v2=True,
            ),
            VrrpInstance(
                name="vi-6",
                vrid=1,
                advert_interval=0.01,
                family="IPv6",
                unicast_peers=("fd00:198:18::2",),
            ),
        ),
    )
    assert c.dns == DnsConfig(
        enabled=False,
        listen=(("::1", 53), ("198.18.0.1", 5353)),
        zones=("cluster.local", "k8s.example.com"),
        ttl=2147483647,
        cluster_ips=True,
    )
    assert c.health == HealthConfig(False, 0.5, 0.25, 1, 10)
    assert c.web == WebConfig(("::", 8443), "admin", "s3cret")
    assert c.state_dir == "/srv/appliance-state"


def test_every_instance_key_accepted_with_its_default() -> None:
    every = {
        **INST,
        "priority": 100,
        "advert_interval": "1s",
        "preempt": True,
        "preempt_delay": 0,
        "family": "IPv4",
        "pools": [],
        "unicast_peers": [],
        "v3_checksum_as_v2": False,
    }
    for instance in (INST, every):
        ha = parse_config(with_("ha", {"interface": "eth0", "instances": [instance]})).ha
        assert ha.instances == (VrrpInstance("vi-1", 51),)


def test_a_relative_state_dir_is_relative_to_the_config_folder() -> None:
    c = parse_config(with_("state_dir", "state"), base_dir="/etc/appliance")
    assert c.state_dir == "/etc/appliance/state"
    assert errors_of(with_("state_dir", 3)) == (
        "state_dir: must be a string, got an integer (3) (quote it)",
    )


def test_null_sections_and_lists_count_as_empty() -> None:
    data = {**MINIMAL, "dataplane": None, "ha": None, "dns": {"listen": ["127.0.0.1:53"]}}
    data["pools"] = [{"name": "p", "addresses": ["198.18.0.1"], "namespaces": None}]
    c = parse_config(data)
    assert c.dataplane == DataplaneConfig()
    assert c.ha == HaConfig()
    assert c.pools[0].namespaces == ()


def test_ha_with_interface_and_no_instances_is_a_single_host() -> None:
    assert parse_config(with_("ha", {"interface": "eth0"})).ha == HaConfig(interface="eth0")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("100ms", 0.1),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        (".5s", 0.5),
        ("5", None),
        ("5 s", None),
        ("-1s", None),
        ("1d", None),
        ("", None),
        (True, None),
        (float("inf"), None),
        (float("nan"), None),
        ([1], None),
    ],
)
def test_durations(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("198.18.100.0/28", "198.18.100.0", "198.18.100.15"),
        ("198.18.100.7/32", "198.18.100.7", "198.18.100.7"),
        ("198.18.100.7", "198.18.100.7", "198.18.100.7"),
        ("198.18.100.10-198.18.100.20", "198.18.100.10", "198.18.100.20"),
        ("198.18.100.10 - 198.18.100.10", "198.18.100.10", "198.18.100.10"),
        ("fd00:198:18:100::/124", "fd00:198:18:100::", "fd00:198:18:100::f"),
        ("fd00:198:18::a-fd00:198:18::b", "fd00:198:18::a", "fd00:198:18::b"),
    ],
)
def test_address_forms_become_inclusive_ranges(text: str, first: str, last: str) -> None:
    assert parse_range(text) == ((IP(first), IP(last)), None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10.0.0.300/24", "'10.0.0.300/24' is not an IP network or range"),
        (
            "198.18.100.5/24",
            "'198.18.100.5/24' has host bits set (did you mean '198.18.100.0/24'?)",
        ),
        ("198.18.0.1-fd00::1", "'198.18.0.1-fd00::1' mixes IPv4 and IPv6"),
        ("198.18.0.9-198.18.0.1", "'198.18.0.9-198.18.0.1': the first address is after the last"),
        ("198.18.0.1-", "'198.18.0.1-' is not an IP network or range"),
        ("fe80::1%eth0", "'fe80::1%eth0' is not an IP network or range"),
        ("web", "'web' is not an IP network or range"),
    ],
)
def test_bad_address_forms(text: str, why: str) -> None:
    assert parse_range(text) == (None, why)


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("[fd00:198:18:0::1]:65535", ("fd00:198:18::1", 65535)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_listen_addresses(text: str, result: tuple[str, int]) -> None:
    assert parse_listen(text) == (result, None)


# --- every error message --------------------------------------------------------------------

POOL0 = "pools[0]"
INST = {"name": "vi-1", "vrid": 51}


def ha_with(**fields: Any) -> dict[str, Any]:
    return with_("ha", {"interface": "eth0", "instances": [{**INST, **fields}]})


ERROR_CASES: list[tuple[str, Any, str]] = [
    # the document
    ("empty", None, "(top level): the configuration is empty"),
    ("list", [1], "(top level): must be a mapping of sections (cluster, pools, ...), got a list"),
    (
        "unknown section",
        with_("dataplan", {}),
        "dataplan: unknown key (did you mean 'dataplane'?)",
    ),
    (
        "unknown with no close match",
        with_("zzz", 1),
        "zzz: unknown key (expected one of: cluster, pools, dataplane, ha, dns, health, web, "
        "state_dir)",
    ),
    ("non-string key", {**MINIMAL, 1: "x"}, "(top level): key 1 is not a known key"),
    # cluster
    (
        "neither source",
        with_("cluster", {}),
        "cluster: set manifests (a folder of YAML files) or kubeconfig (or 'in-cluster')",
    ),
    (
        "both sources",
        with_("cluster.kubeconfig", "/k"),
        "cluster: set manifests or kubeconfig, not both",
    ),
    (
        "camelCase key",
        with_("cluster.loadBalancerClass", "x"),
        "cluster.loadBalancerClass: unknown key (did you mean 'load_balancer_class'?)",
    ),
    (
        "manifests type",
        with_("cluster.manifests", 5),
        "cluster.manifests: must be a string, got an integer (5) (quote it)",
    ),
    ("manifests empty", with_("cluster.manifests", ""), "cluster.manifests: must not be empty"),
    (
        "family case",
        with_("cluster.default_ip_family", "ipv6"),
        "cluster.default_ip_family: must be one of IPv4, IPv6, got 'ipv6' (did you mean 'IPv6'?)",
    ),
    ("cluster type", with_("cluster", "x"), "cluster: must be a mapping, got a string ('x')"),
    # pools
    ("pools missing", with_("pools", DELETE), "pools: required: at least one address pool"),
    ("pools empty", with_("pools", []), "pools: must have at least one pool"),
    (
        "pools mapping",
        with_("pools", {"name": "x"}),
        "pools: must be a list of pools, got a mapping",
    ),
    ("pool null", with_("pools", [None]), "pools[0]: must be a mapping, got null"),
    ("pool name missing", with_(f"{POOL0}.name", DELETE), "pools[0].name: required"),
    (
        "pool name bad",
        with_(f"{POOL0}.name", "Web_1"),
        "pools[0].name: 'Web_1' is not a valid pool name (lower-case letters, digits and '-',"
        " at most 63 characters, starting and ending with a letter or digit)",
    ),
    (
        "duplicate pool",
        with_("pools[1]", {"name": "default", "addresses": ["198.18.1.0/24"]}),
        "pools[1].name: duplicate pool name 'default' (also pools[0])",
    ),
    (
        "addresses missing",
        with_(f"{POOL0}.addresses", DELETE),
        "pools[0].addresses: required: CIDRs, addresses or first-last ranges",
    ),
    ("addresses empty", with_(f"{POOL0}.addresses", []), "pools[0].addresses: must not be empty"),
    (
        "addresses string",
        with_(f"{POOL0}.addresses", "198.18.0.0/24"),
        "pools[0].addresses: must be a list of CIDRs or ranges, got a string ('198.18.0.0/24')",
    ),
    (
        "bad network",
        with_("pools[0].addresses[0]", "10.0.0.300/24"),
        "pools[0].addresses[0]: '10.0.0.300/24' is not an IP network or range",
    ),
    (
        "host bits",
        with_("pools[0].addresses[0]", "198.18.100.5/24"),
        "pools[0].addresses[0]: '198.18.100.5/24' has host bits set"
        " (did you mean '198.18.100.0/24'?)",
    ),
    (
        "address type",
        with_("pools[0].addresses[0]", 7),
        "pools[0].addresses[0]: must be a CIDR, an address or a range, got an integer (7)",
    ),
    (
        "overlap two pools",
        with_("pools[1]", {"name": "web", "addresses": ["198.18.100.8-198.18.100.40"]}),
        "pools[1].addresses[0]: '198.18.100.8-198.18.100.40' overlaps pool 'default'"
        " (pools[0].addresses[0] '198.18.100.0/28') in 198.18.100.8-198.18.100.15",
    ),
    (
        "overlap one address",
        with_("pools[1]", {"name": "web", "addresses": ["198.18.0.1", "198.18.100.15"]}),
        "pools[1].addresses[1]: '198.18.100.15' overlaps pool 'default'"
        " (pools[0].addresses[0] '198.18.100.0/28') in 198.18.100.15",
    ),
    (
        "overlap inside a pool",
        with_(f"{POOL0}.addresses", ["198.18.100.0/28", "198.18.100.0/30"]),
        "pools[0].addresses[1]: '198.18.100.0/30' overlaps pools[0].addresses[0]"
        " '198.18.100.0/28' of the same pool in 198.18.100.0-198.18.100.3",
    ),
    (
        "boolean as string",
        with_(f"{POOL0}.auto_assign", "yes"),
        "pools[0].auto_assign: must be true or false, got a string ('yes'):"
        " write true or false without quotes",
    ),
    (
        "boolean as integer",
        with_(f"{POOL0}.avoid_buggy_ips", 1),
        "pools[0].avoid_buggy_ips: must be true or false, got an integer (1)",
    ),
    (
        "namespace bad",
        with_(f"{POOL0}.namespaces", ["Shop"]),
        "pools[0].namespaces[0]: 'Shop' is not a valid namespace name",
    ),
    (
        "namespace duplicate",
        with_(f"{POOL0}.namespaces", ["shop", "shop"]),
        "pools[0].namespaces[1]: duplicate namespace 'shop'",
    ),
    (
        "namespaces string",
        with_(f"{POOL0}.namespaces", "shop"),
        "pools[0].namespaces: must be a list of namespaces, got a string ('shop')",
    ),
    (
        "selector camelCase",
        with_(f"{POOL0}.service_selector", {"matchLabels": {}}),
        "pools[0].service_selector.matchLabels: unknown key (did you mean 'match_labels'?)",
    ),
    (
        "label value not a string",
        with_(f"{POOL0}.service_selector.match_labels", {"version": 2}),
        "pools[0].service_selector.match_labels.version: must be a string, got an integer (2)"
        " (quote it)",
    ),
    (
        "label key bad",
        with_(f"{POOL0}.service_selector.match_labels", {"-x": "y"}),
        "pools[0].service_selector.match_labels.-x: '-x' is not a valid label key",
    ),
    (
        "operator unknown",
        with_(
            f"{POOL0}.service_selector.match_expressions",
            [{"key": "a", "operator": "in", "values": ["x"]}],
        ),
        "pools[0].service_selector.match_expressions[0].operator: must be one of In, NotIn,"
        " Exists, DoesNotExist, got 'in' (did you mean 'In'?)",
    ),
    (
        "In without values",
        with_(f"{POOL0}.service_selector.match_expressions", [{"key": "a", "operator": "In"}]),
        "pools[0].service_selector.match_expressions[0].values: required with operator In",
    ),
    (
        "Exists with values",
        with_(
            f"{POOL0}.service_selector.match_expressions",
            [{"key": "a", "operator": "Exists", "values": ["x"]}],
        ),
        "pools[0].service_selector.match_expressions[0].values: must be empty with operator Exists",
    ),
    (
        "expression without operator",
        with_(f"{POOL0}.service_selector.match_expressions", [{"key": "a"}]),
        "pools[0].service_selector.match_expressions[0].operator: required: one of In, NotIn,"
        " Exists, DoesNotExist",
    ),
    # dataplane
    (
        "typo key",
        with_("dataplane.schedular", "rr"),
        "dataplane.schedular: unknown key (did you mean 'scheduler'?)",
    ),
    (
        "scheduler unknown",
        with_("dataplane.scheduler", "wrrr"),
        "dataplane.scheduler: must be one of rr, wrr, lc, wlc, sh, dh, sed, nq, mh,"
        " got 'wrrr' (did you mean 'wrr'?)",
    ),
    (
        "backend",
        with_("dataplane.backend", "iptables"),
        "dataplane.backend: must be one of ipvs, nftables, auto, got 'iptables'"
        " (did you mean 'nftables'?)",
    ),
    (
        "forwarding type",
        with_("dataplane.forwarding", None),
        "dataplane.forwarding: must be one of nat, dr, tun, got null",
    ),
    (
        "duration bad",
        with_("dataplane.drain_timeout", "5 minutes"),
        "dataplane.drain_timeout: must be a duration (seconds, or a string like '100ms', '2s',"
        " '1.5s', '5m'), got a string ('5 minutes')",
    ),
    (
        "tun on nftables",
        with_("dataplane", {"backend": "nftables", "forwarding": "tun"}),
        "dataplane.forwarding: tun needs backend ipvs: nftables cannot put packets in an IPIP"
        " tunnel",
    ),
    (
        "dr on nftables, no interface",
        with_("dataplane", {"backend": "nftables", "forwarding": "dr"}),
        "dataplane.forwarding: dr on nftables needs dataplane.interface (or ha.interface): the"
        " interface VIP traffic arrives on, where it is forwarded to the nodes",
    ),
    (
        "interface name",
        with_("dataplane.interface", "eth0:1"),
        "dataplane.interface: 'eth0:1' is not a network interface name (at most 15 characters,"
        " no '/', ':' or spaces)",
    ),
    (
        "duration negative",
        with_("dataplane.drain_timeout", -1),
        "dataplane.drain_timeout: must be from 0s to 86400s, got -1s",
    ),
    # ha
    (
        "vrid range",
        ha_with(vrid=300),
        "ha.instances[0].vrid: must be an integer from 1 to 255, got 300",
    ),
    (
        "vrid string",
        ha_with(vrid="51"),
        "ha.instances[0].vrid: must be an integer from 1 to 255, got a string ('51')",
    ),
    (
        "vrid float",
        ha_with(vrid=51.0),
        "ha.instances[0].vrid: must be an integer from 1 to 255, got a number (51.0)",
    ),
    (
        "vrid missing",
        with_("ha", {"interface": "eth0", "instances": [{"name": "a"}]}),
        "ha.instances[0].vrid: required: an integer from 1 to 255",
    ),
    (
        "instance name missing",
        with_("ha", {"interface": "eth0", "instances": [{"vrid": 1}]}),
        "ha.instances[0].name: required",
    ),
    (
        "priority 255",
        ha_with(priority=255),
        "ha.instances[0].priority: must be an integer from 1 to 254, got 255 (255 means the"
        " address owner, which a VIP holder never is)",
    ),
    (
        "priority 0",
        ha_with(priority=0),
        "ha.instances[0].priority: must be an integer from 1 to 255, got 0",
    ),
    (
        "advert too short",
        ha_with(advert_interval="5ms"),
        "ha.instances[0].advert_interval: must be from 10ms to 40.95s, got 5ms",
    ),
    (
        "advert too long",
        ha_with(advert_interval=41),
        "ha.instances[0].advert_interval: must be from 10ms to 40.95s, got 41s",
    ),
    (
        "advert centiseconds",
        ha_with(advert_interval="15ms"),
        "ha.instances[0].advert_interval: must be whole centiseconds (VRRPv3 counts in units"
        " of 10ms), got 15ms",
    ),
    (
        "preempt string",
        ha_with(preempt="no"),
        "ha.instances[0].preempt: must be true or false, got a string ('no'): write true or false"
        " without quotes",
    ),
    (
        "checksum as v2 on IPv6",
        ha_with(family="IPv6", v3_checksum_as_v2=True),
        "ha.instances[0].v3_checksum_as_v2: applies only to IPv4 instances",
    ),
    (
        "unknown pool",
        ha_with(pools=["defualt"]),
        "ha.instances[0].pools[0]: no pool named 'defualt' (did you mean 'default'?)",
    ),
    (
        "unknown pool far",
        ha_with(pools=["xyz"]),
        "ha.instances[0].pools[0]: no pool named 'xyz' (pools: default)",
    ),
    (
        "peer family",
        ha_with(unicast_peers=["fd00:198:18::2"]),
        "ha.instances[0].unicast_peers[0]: 'fd00:198:18::2' is IPv6, the instance is IPv4",
    ),
    (
        "peer not an address",
        ha_with(unicast_peers=["lb2"]),
        "ha.instances[0].unicast_peers[0]: must be an IP address, got a string ('lb2')",
    ),
    (
        "accepted peer not an address",
        ha_with(peers=["lb2.example"]),
        "ha.instances[0].peers[0]: must be an IP address, got a string ('lb2.example')",
    ),
    (
        "accepted peer family",
        ha_with(peers=["fd00:198:18::2"]),
        "ha.instances[0].peers[0]: 'fd00:198:18::2' is IPv6, the instance is IPv4",
    ),
    (
        "peer is one of our VIPs",
        ha_with(peers=["198.18.100.3"]),
        "ha.instances[0].peers[0]: '198.18.100.3' is our own address (a VIP of pool"
        " 'default'), not a peer",
    ),
    (
        "unicast peer is one of our VIPs",
        ha_with(unicast_peers=["198.18.100.3"]),
        "ha.instances[0].unicast_peers[0]: '198.18.100.3' is our own address (a VIP of pool"
        " 'default'), not a peer",
    ),
    (
        "peer is multicast",
        ha_with(peers=["224.0.0.18"]),
        "ha.instances[0].peers[0]: '224.0.0.18' is not a host's address (multicast,"
        " unspecified or loopback)",
    ),
    (
        "duplicate accepted peer",
        ha_with(peers=["198.18.0.2", "198.18.0.2"]),
        "ha.instances[0].peers[1]: duplicate peer '198.18.0.2'",
    ),
    (
        "instances without interface",
        with_("ha", {"instances": [INST]}),
        "ha.instances: VRRP instances need ha.interface (the interface the adverts go out on)",
    ),
    (
        "interface name",
        with_("ha.interface", "a-very-long-ifname0"),
        "ha.interface: 'a-very-long-ifname0' is not a network interface name (at most 15"
        " characters, no '/', ':' or spaces)",
    ),
    (
        "garp_count",
        with_("ha.garp_count", -1),
        "ha.garp_count: must be an integer from 0 to 1000, got -1",
    ),
    (
        "duplicate vrid",
        with_(
            "ha",
            {
                "interface": "eth0",
                "instances": [
                    {**INST, "pools": ["default"]},
                    {"name": "vi-2", "vrid": 51, "family": "IPv6"},
                    {"name": "vi-3", "vrid": 51, "pools": ["web"]},
                ],
            },
            with_("pools[1]", {"name": "web", "addresses": ["198.18.1.0/24"]}),
        ),
        "ha.instances[2].vrid: duplicate VRID 51 for IPv4 (also ha.instances[0])",
    ),
    (
        "duplicate instance name",
        with_(
            "ha",
            {
                "interface": "eth0",
                "instances": [{**INST, "family": "IPv6"}, {"name": "vi-1", "vrid": 52}],
            },
        ),
        "ha.instances[1].name: duplicate instance name 'vi-1' (also ha.instances[0])",
    ),
    # dns
    (
        "listen string",
        with_("dns.listen", "127.0.0.1:53"),
        "dns.listen: must be a list of host:port, got a string: write ['127.0.0.1:53']",
    ),
    (
        "listen name",
        with_("dns.listen", ["localhost:53"]),
        "dns.listen[0]: 'localhost:53': 'localhost' is not an IP address",
    ),
    (
        "listen port",
        with_("dns.listen", ["127.0.0.1:0"]),
        "dns.listen[0]: '127.0.0.1:0': the port must be from 1 to 65535",
    ),
    (
        "listen v6 without brackets",
        with_("dns.listen", ["::1:53"]),
        "dns.listen[0]: '::1:53' is not host:port (an IP address and a port; IPv6 in brackets)",
    ),
    (
        "listen duplicate",
        with_("dns.listen", ["127.0.0.1:53", "127.0.0.1:53"]),
        "dns.listen[1]: duplicate listen address '127.0.0.1:53'",
    ),
    (
        "zone duplicate",
        with_("dns.zones", ["cluster.local", "Cluster.Local."]),
        "dns.zones[1]: duplicate zone 'cluster.local'",
    ),
    (
        "zone invalid",
        with_("dns.zones", ["bad zone.local"]),
        "dns.zones[0]: 'bad zone.local' is not a valid DNS name: label 'bad zone' may hold"
        " only letters, digits, '-' and '_'",
    ),
    (
        "zone empty label",
        with_("dns.zones", ["a..b"]),
        "dns.zones[0]: 'a..b' is not a valid DNS name: has an empty label",
    ),
    (
        "zone boolean",
        with_("dns.zones", [False]),
        "dns.zones[0]: must be a zone name, got a boolean (false) (quote it: YAML reads"
        " yes/no/on/off/true/false as booleans)",
    ),
    ("zones empty", with_("dns.zones", []), "dns.zones: must not be empty while dns is enabled"),
    ("ttl", with_("dns.ttl", -5), "dns.ttl: must be an integer from 0 to 2147483647, got -5"),
    # health
    (
        "timeout not shorter",
        with_("health", {"interval": "2s", "timeout": "3s"}),
        "health.timeout: must be shorter than health.interval (2s), got 3s",
    ),
    ("rise", with_("health.rise", 0), "health.rise: must be an integer from 1 to 1000, got 0"),
    # web
    (
        "newline in a key",
        with_("dns.a\nb", 1),
        "dns.'a\\nb': unknown key (expected one of: enabled, listen, zones, ttl, cluster_ips)",
    ),
    (
        "web listen",
        with_("web.listen", 8080),
        "web.listen: must be host:port, got an integer (8080)",
    ),
    (
        "user without password",
        with_("web.basic_auth", {"username": "admin"}),
        "web.basic_auth: username needs password or password_file",
    ),
    (
        "password without user",
        with_("web.basic_auth", {"password": "x"}),
        "web.basic_auth: password needs username",
    ),
    (
        "both passwords",
        with_("web.basic_auth", {"username": "a", "password": "x", "password_file": "/p"}),
        "web.basic_auth: set password or password_file, not both",
    ),
    (
        "username colon",
        with_("web.basic_auth", {"username": "a:b", "password": "x"}),
        "web.basic_auth.username: must not contain ':' (HTTP basic auth splits on it)",
    ),
    (
        "password file missing",
        with_("web.basic_auth", {"username": "a", "password_file": "/nonexistent/web.pass"}),
        # the reason is the OS's text for ENOENT (it differs between libcs)
        f"web.basic_auth.password_file: cannot read '/nonexistent/web.pass':"
        f" {os.strerror(errno.ENOENT)}",
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(d, e, id=i) for i, d, e in ERROR_CASES],
)
def test_error_messages(data: object, expected: str) -> None:
    assert errors_of(data) == (expected,)


def test_pool_owned_by_two_instances_of_one_family() -> None:
    base = with_("pools[1]", {"name": "web", "addresses": ["198.18.1.0/24"]})
    data = with_(
        "ha",
        {
            "interface": "eth0",
            "instances": [
                {"name": "a", "vrid": 1, "pools": ["default"]},
                {"name": "b", "vrid": 1, "family": "IPv6", "pools": ["default"]},  # fine
                {"name": "c", "vrid": 2, "pools": ["web", "default"]},
                {"name": "d", "vrid": 3},  # no pools: every pool
            ],
        },
        base,
    )
    assert errors_of(data) == (
        "ha.instances[2].pools[1]: pool 'default' is already owned by IPv4 instance 'a'",
        "ha.instances[3].pools: pool 'default' is already owned by IPv4 instance 'a'"
        " (no pools listed means every pool)",
        "ha.instances[3].pools: pool 'web' is already owned by IPv4 instance 'c'"
        " (no pools listed means every pool)",
    )


def test_several_errors_are_collected_in_one_pass() -> None:
    data = {
        "cluster": {"manifests": "m", "kubeconfig": "k"},
        "pools": [
            {"name": "default", "addresses": ["10.0.0.300/24"]},
            {"name": "default", "addresses": ["198.18.0.0/24"], "auto_assign": "yes"},
        ],
        "dataplane": {"schedular": "rr"},
        "ha": {"interface": "eth0", "instances": [{"name": "x", "vrid": 300}]},
        "dns": {"ttl": "5"},
    }
    assert errors_of(data) == (
        "pools[0].addresses[0]: '10.0.0.300/24' is not an IP network or range",
        "pools[1].name: duplicate pool name 'default' (also pools[0])",
        "pools[1].auto_assign: must be true or false, got a string ('yes'):"
        " write true or false without quotes",
        "cluster: set manifests or kubeconfig, not both",
        "dataplane.schedular: unknown key (did you mean 'scheduler'?)",
        "ha.instances[0].vrid: must be an integer from 1 to 255, got 300",
        "dns.ttl: must be an integer from 0 to 2147483647, got a string ('5')",
    )


def test_error_carries_every_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_("dataplane", {"backend": 1, "forwarding": 2}))
    assert len(info.value.errors) == 2
    assert str(info.value).splitlines() == list(info.value.errors)


# --- files ----------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    c = load_config(REPO / "examples" / "appliance.yaml")
    assert c.cluster.manifests == str(REPO / "examples" / "manifests")
    assert [p.name for p in c.pools] == ["default", "reserved"]
    assert c.pools[0].ranges == (
        (IP("198.18.100.0"), IP("198.18.100.15")),
        (IP("fd00:198:18:100::"), IP("fd00:198:18:100::f")),
    )
    assert c.pools[0].auto_assign and not c.pools[1].auto_assign
    assert c.pools[1].ranges == ((IP("198.18.101.0"), IP("198.18.101.7")),)
    assert c.dataplane == DataplaneConfig("auto", "nat", "rr", interface="eth0")
    assert c.ha.interface == "eth0"
    assert c.ha.instances == (VrrpInstance("vi-1", 51, 100, 0.1, pools=("default", "reserved")),)
    assert c.dns.zones == ("cluster.local", "k8s.example.com")
    assert c.dns.listen == (("127.0.0.1", 5353),)
    assert c.web.listen == ("127.0.0.1", 8080)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "etc" / "secrets" / "web.pass", "hunter2\n")
    cfg = write(
        tmp_path / "etc" / "appliance.yaml",
        "cluster: {kubeconfig: kube/config}\n"
        "pools: [{name: p, addresses: [198.18.0.0/30]}]\n"
        "web: {basic_auth: {username: admin, password_file: secrets/web.pass}}\n",
    )
    monkeypatch.chdir(tmp_path)  # a relative path to the file itself works too
    c = load_config(os.path.join("etc", "appliance.yaml"))
    assert c.cluster.kubeconfig == str(tmp_path / "etc" / "kube" / "config")
    assert c.web.username == "admin"
    assert c.web.password == "hunter2"  # the trailing newline is not part of it
    assert c.source == os.path.join("etc", "appliance.yaml")
    text = cfg.read_text().replace("kubeconfig: kube/config", "manifests: ../m")
    c = load_config(write(cfg, text))
    assert c.cluster.manifests == str(tmp_path / "etc" / ".." / "m")
    text = cfg.read_text().replace("manifests: ../m", "kubeconfig: in-cluster")
    assert load_config(write(cfg, text)).cluster.kubeconfig == "in-cluster"


def test_parse_config_resolves_only_with_a_base_dir(tmp_path: Path) -> None:
    data = with_("cluster.manifests", "m")
    assert parse_config(data).cluster.manifests == "m"
    assert parse_config(data, base_dir=tmp_path).cluster.manifests == str(tmp_path / "m")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "a.yaml",
        "cluster:\n  manifests: m\npools:\n  - name: p\n    addresses: [198.18.0.1\ndns: {}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    (line,) = info.value.errors
    assert line.startswith(f"{cfg}:6:")
    assert "invalid YAML" in line


def test_bad_indentation(tmp_path: Path) -> None:
    cfg = write(tmp_path / "a.yaml", "cluster:\n  manifests: m\n bad: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.errors[0].startswith(f"{cfg}:3:")


def test_validation_errors_name_file_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "a.yaml",
        "cluster:\n"
        "  manifests: m\n"
        "pools:\n"
        "  - name: p\n"
        "    addresses:\n"
        "      - 198.18.0.1\n"
        "      - 10.0.0.300/24\n"
        "  - addresses: [198.18.1.1]\n"
        "dataplane:\n"
        "  schedular: rr\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.errors == (
        f"{cfg}:7: pools[0].addresses[1]: '10.0.0.300/24' is not an IP network or range",
        f"{cfg}:8: pools[1].name: required",
        f"{cfg}:10: dataplane.schedular: unknown key (did you mean 'scheduler'?)",
    )


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "a.yaml",
        "cluster: {manifests: m}\npools: [{name: p, addresses: [198.18.0.1]}]\n"
        "dataplane:\n  scheduler: rr\n  scheduler: wrr\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.errors == (f"{cfg}:5: dataplane.scheduler: duplicate key (also on line 4)",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty (or only comments)"),
        ("# nothing\n", "the file is empty (or only comments)"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("x: !!python/object:os.system {}\n", "invalid YAML"),
        ("\x00", "invalid YAML"),
    ],
)
def test_unusable_files(tmp_path: Path, text: str, message: str) -> None:
    cfg = write(tmp_path / "a.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    (line,) = info.value.errors
    assert line.startswith(f"{cfg}")
    assert message in line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.errors == (
        f"{tmp_path / 'nope.yaml'}: cannot read: {os.strerror(errno.ENOENT)}",
    )


def test_recursive_alias_does_not_hang(tmp_path: Path) -> None:
    cfg = write(tmp_path / "a.yaml", "cluster: {manifests: m}\npools: &p [*p]\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.errors == (f"{cfg}:2: pools[0]: must be a mapping, got a list",)


@pytest.mark.parametrize("depth", [4000, 20_000])
@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_an_error_not_a_crash(
    tmp_path: Path, depth: int, opening: str, closing: str
) -> None:
    # 200,000 levels crash libyaml's recursive composer (a segfault, not an exception);
    # 20,000 is past the bound where load_config switches to the pure-Python loader.
    cfg = write(tmp_path / "a.yaml", "cluster: {manifests: m}\npools: " + opening * depth
                + "1" + closing * depth + "\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    first = info.value.errors[0]
    assert "\n" not in first
    # Either the nesting parses and the checker refuses it, or YAML refuses it: then the
    # message is ours (file, line 2, "invalid YAML"), whatever PyYAML words the reason.
    assert first in (
        f"{cfg}:2: pools: must be a list of pools, got a mapping",
        f"{cfg}:2: pools[0]: must be a mapping, got a list",
    ) or re.fullmatch(rf"{re.escape(str(cfg))}:2:\d+: invalid YAML: \S.*", first), first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "must hold the password on one line"),
        ("a\nb\n", "must hold the password on one line"),
        (b"\xff\xfe", "is not UTF-8 text"),
        ("x" * 5000, "is too large for a password file"),
    ],
)
def test_bad_password_files(tmp_path: Path, content: str | bytes, message: str) -> None:
    pw = tmp_path / "pw"
    if isinstance(content, bytes):
        pw.write_bytes(content)
    else:
        pw.write_text(content)
    data = with_("web.basic_auth", {"username": "a", "password_file": str(pw)})
    assert errors_of(data) == (f"web.basic_auth.password_file: {str(pw)!r} {message}",)


def test_password_file_must_be_a_regular_file(tmp_path: Path) -> None:
    data = with_("web.basic_auth", {"username": "a", "password_file": str(tmp_path)})
    assert errors_of(data) == (
        f"web.basic_auth.password_file: {str(tmp_path)!r} is not a regular file",
    )


# --- never anything but ConfigError ---------------------------------------------------------

KEYS = [
    "cluster", "pools", "dataplane", "ha", "dns", "health", "web", "manifests", "kubeconfig",
    "load_balancer_class", "default_ip_family", "name", "addresses", "auto_assign",
    "avoid_buggy_ips", "namespaces", "service_selector", "match_labels", "match_expressions",
    "key", "operator", "values", "backend", "forwarding", "scheduler", "drain_timeout",
    "interface", "garp_count", "garp_interval", "garp_refresh", "instances", "vrid",
    "priority", "advert_interval", "preempt", "preempt_delay", "family", "unicast_peers", "peers",
    "enabled", "listen", "zones", "ttl", "cluster_ips", "interval", "timeout", "rise", "fall",
    "basic_auth", "username", "password", "password_file", "v3_checksum_as_v2",
    "kube_proxy_port", "max_in_flight", "api_server", "token_file", "ca_file",
    "lease_namespace", "write_status",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "198.18.0.0/24",
            "198.18.0.1-198.18.0.9",
            "fd00:198:18::/120",
            "10ms",
            "1.5s",
            "IPv6",
            "In",
            "Exists",
            "rr",
            "eth0",
            "127.0.0.1:53",
            "[::1]:53",
            "default",
            "cluster.local",
            "in-cluster",
            "1-2",
            "::",
            "/",
        ]
    ),
)
YAMLISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=40,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_random_data_never_raises_anything_but_config_error(data: object) -> None:
    try:
        parse_config(data)
    except ConfigError as e:
        assert e.errors
        assert all(isinstance(line, str) and "\n" not in line for line in e.errors)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {"cluster": st.fixed_dictionaries({"manifests": st.just("m")})},
        optional=dict.fromkeys(("pools", "dataplane", "ha", "dns", "health", "web"), YAMLISH),
    )
)
def test_random_sections_never_raise_anything_but_config_error(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError as e:
        assert e.errors


# --- the reference page matches the code ----------------------------------------------------


def documented_keys() -> list[str]:
    text = (REPO / "docs" / "config.md").read_text()
    return re.findall(r"^\| `([a-z0-9_.\[\]]+)` \|", text, flags=re.MULTILINE)


def test_docs_list_every_key() -> None:
    documented = {path.replace("[]", "").rsplit(".", 1)[-1] for path in documented_keys()}
    assert set(KEYS) - {"cluster", "pools", "dataplane", "ha", "dns", "health", "web"} <= (
        documented
    )


@pytest.mark.parametrize("path", documented_keys())
def test_every_documented_key_is_accepted(path: str) -> None:
    # Put the key where the docs say it lives; any error but "unknown key" is fine here.
    data: dict[str, Any] = copy.deepcopy(MINIMAL)
    node: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        name = part.removesuffix("[]")
        node = node.setdefault(name, [{}])[0] if part.endswith("[]") else node.setdefault(name, {})
    node[parts[-1].removesuffix("[]")] = "x"
    try:
        parse_config(data)
    except ConfigError as e:
        assert not [line for line in e.errors if "unknown key" in line]


def test_libyaml_only_where_nesting_cannot_crash_it() -> None:
    from appliance.config.positions import MAX_FAST_NESTING, _loader_for

    assert _loader_for(b"[" * MAX_FAST_NESTING) is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert _loader_for(b"- " * (MAX_FAST_NESTING + 1)) is yaml.SafeLoader
    assert _loader_for((REPO / "examples" / "appliance.yaml").read_bytes()) is not yaml.SafeLoader


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), YAMLISH.map(yaml.safe_dump)))
def test_random_files_never_raise_anything_but_config_error(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cfg = Path(folder) / "a.yaml"
        if isinstance(content, bytes):
            cfg.write_bytes(content)
        else:
            cfg.write_text(content, errors="surrogatepass")
        try:
            load_config(cfg)
        except ConfigError as e:
            assert e.errors
            assert all(line.startswith(str(cfg)) and "\n" not in line for line in e.errors)


def test_peers_are_accepted_with_the_unicast_peers(tmp_path: Path) -> None:
    data = ha_with(peers=["198.18.0.2", "198.18.0.3"], unicast_peers=["198.18.0.3", "198.18.0.4"])
    (inst,) = parse_config(data).ha.instances
    assert inst.peers == ("198.18.0.2", "198.18.0.3")
    assert inst.accepted_peers == ("198.18.0.2", "198.18.0.3", "198.18.0.4")
    (none,) = parse_config(ha_with()).ha.instances
    assert none.accepted_peers == ()


def test_bad_peer_names_file_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "a.yaml",
        "cluster:\n"
        "  manifests: m\n"
        "pools:\n"
        "  - name: lan\n"
        "    addresses: [198.18.20.100-198.18.20.110]\n"
        "ha:\n"
        "  interface: eth0\n"
        "  instances:\n"
        "    - name: vi-1\n"
        "      vrid: 51\n"
        "      peers:\n"
        "        - lb2\n"
        "        - 198.18.20.101\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.errors == (
        f"{cfg}:12: ha.instances[0].peers[0]: must be an IP address, got a string ('lb2')",
        f"{cfg}:13: ha.instances[0].peers[1]: '198.18.20.101' is our own address (a VIP of"
        " pool 'lan'), not a peer",
    )


def test_ha_track_weights_and_interfaces() -> None:
    data = with_("ha", {"interface": "eth0", "track": {
        "dataplane": 0, "source": -20, "source_after": "30s",
        "interfaces": [{"name": "bond0", "weight": -60}, {"name": "eth1"}],
    }})  # fmt: skip
    track = parse_config(data).ha.track
    assert track == TrackConfig(
        0, -20, 30.0, (TrackInterface("bond0", -60), TrackInterface("eth1"))
    )
    assert track.weights() == {
        "dataplane": 0, "source": -20, "interface bond0": -60, "interface eth1": 0
    }  # fmt: skip
    assert parse_config(with_("ha", {"interface": "eth0"})).ha.track == TrackConfig()


@pytest.mark.parametrize(
    ("track", "error"),
    [
        ({"dataplane": 10}, "ha.track.dataplane: must be an integer from -254 to 0, got 10"),
        ({"sorce": -10}, "ha.track.sorce: unknown key (did you mean 'source'?)"),
        ({"interfaces": [{"weight": -1}]}, "ha.track.interfaces[0].name: required"),
        ({"interfaces": [{"name": "eth0"}]}, "ha.track.interfaces[0].name: eth0 is ha.interface"),
        ({"interfaces": [{"name": "a"}, {"name": "a"}]}, "interfaces[1].name: a is listed twice"),
    ],
)
def test_ha_track_errors(track: dict[str, Any], error: str) -> None:
    errors = errors_of(with_("ha", {"interface": "eth0", "track": track}))
    assert any(error in e for e in errors), errors


def test_use_vmac_is_for_ipv4_instances_with_ipv4_pools() -> None:
    base = with_(
        "ha", {"interface": "eth0", "instances": [{"name": "a", "vrid": 7, "use_vmac": True}]}
    )
    assert parse_config(base).ha.instances[0].use_vmac
    v6 = with_("ha.instances[0].family", "IPv6", base)
    assert any("use_vmac: applies only to IPv4 instances" in e for e in errors_of(v6))
    mixed = with_("pools[1]", {"name": "six", "addresses": ["fd00:198:18::/120"]}, base)
    assert any("owns IPv6 pool(s) six" in e for e in errors_of(mixed)), errors_of(mixed)

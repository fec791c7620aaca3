"""appliance.yaml -> `Config`: parse, validate, report every problem at once.

Every error is one line, `<path>: <message>`, where path is the place in the YAML
(`pools[1].addresses[0]`). `load_config` adds `<file>:<line>:` in front, found from the
YAML node tree, and also rejects duplicate keys (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from appliance.config_types import (
    ClusterConfig,
    Config,
    DataplaneConfig,
    DnsConfig,
    HaConfig,
    HealthConfig,
    IPRange,
    LabelRequirement,
    LabelSelector,
    Pool,
    TrackConfig,
    TrackInterface,
    VrrpInstance,
    WebConfig,
)
from appliance.config_values import (
    Checker,
    Errors,
    check_ifname,
    check_label_key,
    check_label_value,
    check_zone,
    fmt_range,
    fmt_seconds,
    found,
    join_index,
    join_key,
    parse_duration,
    parse_ip,
    parse_listen,
    parse_range,
    quote_hint,
    short,
    suggest,
)
from appliance.config_yaml import YamlError, read_yaml
from appliance.model import SCHEDULERS, Family

__all__ = [
    "ConfigError",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen",
    "parse_range",
]


FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")
BACKENDS = ("ipvs", "nftables", "auto")
FORWARDINGS = ("nat", "dr", "tun")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_PASSWORD_FILE = 4096

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


class ConfigError(Exception):
    """The configuration is unusable; `errors` has every reason, one line each."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- sections -----------------------------------------------------------------------------


def _resolve(c: Checker, path_text: str) -> str:
    if c.base_dir is None or os.path.isabs(path_text):
        return path_text
    return str(c.base_dir / path_text)


def _cluster(c: Checker, value: object) -> ClusterConfig:
    path = "cluster"
    d = c.mapping(
        value,
        path,
        (
            "manifests",
            "kubeconfig",
            "load_balancer_class",
            "default_ip_family",
            "api_server",
            "token_file",
            "ca_file",
            "lease_namespace",
            "write_status",
        ),
    )
    manifests = c.string(d, "manifests", path, None, nullable=True)
    kubeconfig = c.string(d, "kubeconfig", path, None, nullable=True)
    api_server = c.string(d, "api_server", path, None, nullable=True)
    token_file = c.string(d, "token_file", path, None, nullable=True)
    ca_file = c.string(d, "ca_file", path, None, nullable=True)
    chosen = [k for k, v in (("manifests", manifests), ("kubeconfig", kubeconfig)) if v]
    if api_server is not None:
        chosen.append("api_server")
    if len(chosen) > 1 and "api_server" not in chosen:
        c.err(path, "set manifests or kubeconfig, not both")
    elif len(chosen) > 1:
        c.err(path, f"set one of manifests, kubeconfig and api_server, not {' and '.join(chosen)}")
    elif (
        d.get("manifests") is None
        and d.get("kubeconfig") is None
        and d.get("api_server") is None
        and isinstance(value, dict | None)
    ):
        c.err(path, "set manifests (a folder of YAML files) or kubeconfig (or 'in-cluster')")
    if api_server is not None:
        if not api_server.startswith(("https://", "http://")):
            c.err(join_key(path, "api_server"), f"must be an https:// URL, got {short(api_server)}")
        if token_file is None:
            c.err(path, "api_server needs token_file (a ServiceAccount token)")
    elif token_file is not None or ca_file is not None:
        c.err(path, "token_file and ca_file go with api_server")
    if manifests is not None:
        manifests = _resolve(c, manifests)
    if kubeconfig is not None and kubeconfig != "in-cluster":
        kubeconfig = _resolve(c, kubeconfig)
    lease_namespace = c.string(d, "lease_namespace", path, "appliance-system")
    if lease_namespace is not None and not _NAME.fullmatch(lease_namespace):
        c.err(
            join_key(path, "lease_namespace"),
            "must be a namespace name (lower case letters, digits, '-'), "
            f"got {short(lease_namespace)}",
        )
    return ClusterConfig(
        manifests=manifests,
        kubeconfig=kubeconfig,
        load_balancer_class=c.string(d, "load_balancer_class", path, None, nullable=True),
        default_ip_family=cast(Family, c.choice(d, "default_ip_family", path, "IPv4", FAMILIES)),
        api_server=api_server.rstrip("/") if api_server else None,
        token_file=_resolve(c, token_file) if token_file else None,
        ca_file=_resolve(c, ca_file) if ca_file else None,
        lease_namespace=lease_namespace or "appliance-system",
        write_status=c.boolean(d, "write_status", path, True),
    )


def _selector(c: Checker, value: object, path: str) -> LabelSelector:
    d = c.mapping(value, path, ("match_labels", "match_expressions"))
    labels: list[tuple[str, str]] = []
    ml_path = join_key(path, "match_labels")
    raw_labels = d.get("match_labels")
    if raw_labels is not None and not isinstance(raw_labels, dict):
        c.err(ml_path, f"must be a mapping of label to value, got {found(raw_labels)}")
    elif raw_labels:
        for k, v in raw_labels.items():
            if not isinstance(k, str):
                c.err(ml_path, f"label key {short(k)} must be a string{quote_hint(k)}")
                continue
            kp = join_key(ml_path, k)
            if not isinstance(v, str):
                c.err(kp, f"must be a string, got {found(v)}{quote_hint(v)}")
                continue
            problem = check_label_key(k) or check_label_value(v)
            if problem:
                c.err(kp, problem)
                continue
            labels.append((k, v))
    requirements: list[LabelRequirement] = []
    me_path = join_key(path, "match_expressions")
    for i, item in enumerate(c.seq(d.get("match_expressions"), me_path)):
        ip = join_index(me_path, i)
        e = c.mapping(item, ip, ("key", "operator", "values"), nullable=False)
        if not isinstance(item, dict):
            continue
        key = c.string(e, "key", ip, None, check=check_label_key)
        if "key" not in e:
            c.err(join_key(ip, "key"), "required")
        if "operator" not in e:
            c.err(join_key(ip, "operator"), f"required: one of {', '.join(OPERATORS)}")
        operator = c.choice(e, "operator", ip, "", OPERATORS)
        values: list[str] = []
        vp = join_key(ip, "values")
        for j, v in enumerate(c.seq(e.get("values"), vp)):
            if not isinstance(v, str):
                c.err(join_index(vp, j), f"must be a string, got {found(v)}{quote_hint(v)}")
            elif problem := check_label_value(v):
                c.err(join_index(vp, j), problem)
            else:
                values.append(v)
        if operator in ("In", "NotIn") and "values" in e and not e["values"]:
            c.err(vp, f"must not be empty with operator {operator}")
        elif operator in ("In", "NotIn") and "values" not in e:
            c.err(vp, f"required with operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and e.get("values"):
            c.err(vp, f"must be empty with operator {operator}")
        if key is not None and operator:
            requirements.append(
                LabelRequirement(
                    key=key,
                    operator=cast(Literal["In", "NotIn", "Exists", "DoesNotExist"], operator),
                    values=tuple(values),
                )
            )
    return LabelSelector(match_labels=tuple(labels), match_expressions=tuple(requirements))


@dataclass(frozen=True)
class _Placed:
    """A range and where it came from, to name both sides of an overlap."""

    range: IPRange
    pool: str
    index: int
    path: str
    text: str


def _pools(c: Checker, value: object) -> tuple[Pool, ...]:
    if value is None:
        c.err("pools", "required: at least one address pool")
        return ()
    items = c.seq(value, "pools", "a list of pools")
    if isinstance(value, list) and not value:
        c.err("pools", "must have at least one pool")
    pools: list[Pool] = []
    seen: dict[str, str] = {}
    placed: list[_Placed] = []
    allowed = (
        "name",
        "addresses",
        "auto_assign",
        "avoid_buggy_ips",
        "namespaces",
        "service_selector",
    )
    for i, item in enumerate(items):
        path = join_index("pools", i)
        d = c.mapping(item, path, allowed, nullable=False)
        if not isinstance(item, dict):
            continue
        name = c.string(
            d,
            "name",
            path,
            None,
            check=lambda s: (
                None
                if len(s) <= 63 and _NAME.fullmatch(s)
                else f"{s!r} is not a valid pool name (lower-case letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit)"
            ),
        )
        if "name" not in d:
            c.err(join_key(path, "name"), "required")
        elif name is not None:
            if name in seen:
                c.err(join_key(path, "name"), f"duplicate pool name {name!r} (also {seen[name]})")
            else:
                seen[name] = path
        ranges: list[IPRange] = []
        ap = join_key(path, "addresses")
        if "addresses" not in d:
            c.err(ap, "required: CIDRs, addresses or first-last ranges")
        elif d["addresses"] is not None and not isinstance(d["addresses"], list):
            c.err(ap, f"must be a list of CIDRs or ranges, got {found(d['addresses'])}")
        elif not d["addresses"]:
            c.err(ap, "must not be empty")
        else:
            for j, a in enumerate(d["addresses"]):
                aj = join_index(ap, j)
                if not isinstance(a, str):
                    c.err(aj, f"must be a CIDR, an address or a range, got {found(a)}")
                    continue
                r, problem = parse_range(a)
                if r is None:
                    c.err(aj, problem or "invalid")
                    continue
                ranges.append(r)
                placed.append(_Placed(r, name or f"#{i}", i, aj, a))
        namespaces: list[str] = []
        np_ = join_key(path, "namespaces")
        for j, ns in enumerate(c.seq(d.get("namespaces"), np_, "a list of namespaces")):
            if not isinstance(ns, str):
                c.err(join_index(np_, j), f"must be a string, got {found(ns)}{quote_hint(ns)}")
            elif len(ns) > 63 or not _NAME.fullmatch(ns):
                c.err(join_index(np_, j), f"{ns!r} is not a valid namespace name")
            elif ns in namespaces:
                c.err(join_index(np_, j), f"duplicate namespace {ns!r}")
            else:
                namespaces.append(ns)
        selector = _selector(c, d.get("service_selector"), join_key(path, "service_selector"))
        pools.append(
            Pool(
                name=name or "",
                ranges=tuple(ranges),
                auto_assign=c.boolean(d, "auto_assign", path, True),
                avoid_buggy_ips=c.boolean(d, "avoid_buggy_ips", path, False),
                namespaces=tuple(namespaces),
                service_selector=selector,
            )
        )
    _overlaps(c, placed)
    return tuple(pools)


def _overlaps(c: Checker, placed: list[_Placed]) -> None:
    # Sweep in address order; each range is compared to the one reaching furthest so far,
    # which finds every range that overlaps some earlier one.
    order = sorted(placed, key=lambda p: (p.range[0].version, int(p.range[0]), p.path))
    reach: _Placed | None = None
    for p in order:
        if (
            reach is not None
            and reach.range[0].version == p.range[0].version
            and int(p.range[0]) <= int(reach.range[1])
        ):
            last = min(int(p.range[1]), int(reach.range[1]))
            both = cast(IPRange, (p.range[0], ipaddress.ip_address(last)))
            later, earlier = sorted((p, reach), key=lambda x: _path_order(x.path), reverse=True)
            where = (
                f"pool {earlier.pool!r} ({earlier.path} {earlier.text!r})"
                if earlier.index != later.index
                else f"{earlier.path} {earlier.text!r} of the same pool"
            )
            c.err(later.path, f"{later.text!r} overlaps {where} in {fmt_range(both)}")
        if reach is None or (
            reach.range[0].version != p.range[0].version or int(p.range[1]) > int(reach.range[1])
        ):
            reach = p


def _path_order(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\[(\d+)\]", path))


def _dataplane(c: Checker, value: object) -> DataplaneConfig:
    path = "dataplane"
    d = c.mapping(value, path, ("backend", "forwarding", "scheduler", "drain_timeout"))
    return DataplaneConfig(
        backend=cast(Any, c.choice(d, "backend", path, "auto", BACKENDS)),
        forwarding=cast(Any, c.choice(d, "forwarding", path, "nat", FORWARDINGS)),
        scheduler=c.choice(d, "scheduler", path, "rr", SCHEDULERS),
        drain_timeout=c.duration(d, "drain_timeout", path, 300.0, 0.0, 86400.0),
    )


def _advert_interval(c: Checker, d: Mapping[str, Any], path: str) -> float:
    seconds = c.duration(d, "advert_interval", path, 1.0, 0.01, 40.95)
    centis = seconds * 100
    if abs(centis - round(centis)) > 1e-6:
        c.err(
            join_key(path, "advert_interval"),
            "must be whole centiseconds (VRRPv3 counts in units of 10ms), "
            f"got {fmt_seconds(seconds)}",
        )
        return 1.0
    return round(centis) / 100


def _ha(c: Checker, value: object, pools: Sequence[Pool]) -> HaConfig:
    path = "ha"
    d = c.mapping(
        value,
        path,
        ("interface", "garp_count", "garp_interval", "garp_refresh", "instances", "track"),
    )
    interface = c.string(d, "interface", path, None, nullable=True, check=check_ifname)
    pool_names = list(dict.fromkeys(p.name for p in pools if p.name))
    instances: list[VrrpInstance] = []
    names: dict[str, str] = {}
    vrids: dict[tuple[str, int], str] = {}
    owners: dict[tuple[str, str], str] = {}  # (family, pool) -> instance path
    ip_ = join_key(path, "instances")
    items = c.seq(d.get("instances"), ip_, "a list of VRRP instances")
    if items and d.get("interface") is None:
        c.err(ip_, "VRRP instances need ha.interface (the interface the adverts go out on)")
    for i, item in enumerate(items):
        p = join_index(ip_, i)
        e = c.mapping(
            item,
            p,
            (
                "name",
                "vrid",
                "priority",
                "advert_interval",
                "preempt",
                "preempt_delay",
                "family",
                "pools",
                "unicast_peers",
                "peers",
                "v3_checksum_as_v2",
                "use_vmac",
            ),
            nullable=False,
        )
        if not isinstance(item, dict):
            continue
        name = c.string(
            e,
            "name",
            p,
            None,
            check=lambda s: (
                None
                if len(s) <= 63 and _INSTANCE_NAME.fullmatch(s)
                else f"{s!r} is not a valid instance name (letters, digits, '-', '_', '.')"
            ),
        )
        if "name" not in e:
            c.err(join_key(p, "name"), "required")
        elif name is not None:
            if name in names:
                c.err(join_key(p, "name"), f"duplicate instance name {name!r} (also {names[name]})")
            else:
                names[name] = p
        family = cast(Family, c.choice(e, "family", p, "IPv4", FAMILIES))
        if "vrid" not in e:
            c.err(join_key(p, "vrid"), "required: an integer from 1 to 255")
        vrid = c.integer(e, "vrid", p, 0, 1, 255)
        if vrid:
            if (family, vrid) in vrids:
                c.err(
                    join_key(p, "vrid"),
                    f"duplicate VRID {vrid} for {family} (also {vrids[(family, vrid)]})",
                )
            else:
                vrids[(family, vrid)] = p
        priority = c.integer(e, "priority", p, 100, 1, 255)
        if priority == 255:
            c.err(
                join_key(p, "priority"),
                "must be an integer from 1 to 254, got 255 (255 means the address owner,"
                " which a VIP holder never is)",
            )
            priority = 100
        owned: list[str] = []
        pp = join_key(p, "pools")
        for j, pn in enumerate(c.seq(e.get("pools"), pp, "a list of pool names")):
            if not isinstance(pn, str):
                c.err(join_index(pp, j), f"must be a pool name, got {found(pn)}")
            elif pn not in pool_names:
                hint = suggest(pn, pool_names)
                known = f"did you mean {hint!r}?" if hint else f"pools: {', '.join(pool_names)}"
                c.err(join_index(pp, j), f"no pool named {pn!r} ({known})")
            elif pn in owned:
                c.err(join_index(pp, j), f"pool {pn!r} is listed twice")
            else:
                owned.append(pn)
                _own(c, owners, family, pn, join_index(pp, j), name)
        if not e.get("pools"):
            for pn in pool_names:
                _own(c, owners, family, pn, pp, name, every=True)
        peers = _peers(c, e, p, "unicast_peers", family, pools)
        accepted = _peers(c, e, p, "peers", family, pools)
        as_v2 = c.boolean(e, "v3_checksum_as_v2", p, False)
        if as_v2 and family != "IPv4":
            c.err(join_key(p, "v3_checksum_as_v2"), "applies only to IPv4 instances")
            as_v2 = False
        use_vmac = c.boolean(e, "use_vmac", p, False)
        if use_vmac:
            six = [
                pl.name for pl in pools if (pl.name in owned or not owned) and "IPv6" in pl.families
            ]
            if family != "IPv4":
                c.err(join_key(p, "use_vmac"), "applies only to IPv4 instances (for now)")
                use_vmac = False
            elif six:
                c.err(
                    join_key(p, "use_vmac"),
                    f"the virtual MAC carries IPv4 VIPs only, and this instance owns IPv6"
                    f" pool(s) {', '.join(six)} (list its IPv4 pools in `pools`)",
                )
                use_vmac = False
        instances.append(
            VrrpInstance(
                name=name or "",
                vrid=vrid,
                priority=priority,
                advert_interval=_advert_interval(c, e, p),
                preempt=c.boolean(e, "preempt", p, True),
                preempt_delay=c.duration(e, "preempt_delay", p, 0.0, 0.0, 3600.0),
                pools=tuple(owned),
                unicast_peers=tuple(peers),
                peers=tuple(accepted),
                family=family,
                v3_checksum_as_v2=as_v2,
                use_vmac=use_vmac,
            )
        )
    return HaConfig(
        interface=interface,
        instances=tuple(instances),
        garp_count=c.integer(d, "garp_count", path, 5, 0, 1000),
        garp_interval=c.duration(d, "garp_interval", path, 0.02, 0.0, 60.0),
        garp_refresh=c.duration(d, "garp_refresh", path, 0.0, 0.0, 86400.0),
        track=_track(c, d.get("track"), join_key(path, "track"), interface),
    )


def _track(c: Checker, value: object, path: str, interface: str | None) -> TrackConfig:
    d = c.mapping(value, path, ("dataplane", "source", "source_after", "interfaces"))
    defaults = TrackConfig()
    items: list[TrackInterface] = []
    ip_ = join_key(path, "interfaces")
    seen: set[str] = set()
    for i, item in enumerate(c.seq(d.get("interfaces"), ip_, "a list of {name, weight}")):
        p = join_index(ip_, i)
        e = c.mapping(item, p, ("name", "weight"), nullable=False)
        if not isinstance(item, dict):
            continue
        if "name" not in e:
            c.err(join_key(p, "name"), "required: the interface to track")
            continue
        name = c.string(e, "name", p, None, check=check_ifname)
        if name is None:
            continue
        if name == interface:
            c.err(join_key(p, "name"), f"{name} is ha.interface: its loss is Fault already")
        elif name in seen:
            c.err(join_key(p, "name"), f"{name} is listed twice")
        else:
            seen.add(name)
            items.append(TrackInterface(name, c.integer(e, "weight", p, 0, -254, 0)))
    return TrackConfig(
        dataplane=c.integer(d, "dataplane", path, defaults.dataplane, -254, 0),
        source=c.integer(d, "source", path, defaults.source, -254, 0),
        source_after=c.duration(d, "source_after", path, defaults.source_after, 0.0, 86400.0),
        interfaces=tuple(items),
    )


def _peers(
    c: Checker, e: Mapping[str, Any], path: str, key: str, family: str, pools: Sequence[Pool]
) -> list[str]:
    """A list of peer addresses: IP addresses of the instance's family, not ours."""
    peers: list[str] = []
    kp = join_key(path, key)
    for j, peer in enumerate(c.seq(e.get(key), kp, "a list of addresses")):
        addr = parse_ip(peer) if isinstance(peer, str) else None
        pj = join_index(kp, j)
        if addr is None:
            c.err(pj, f"must be an IP address, got {found(peer)}")
        elif f"IPv{addr.version}" != family:
            c.err(pj, f"{peer!r} is IPv{addr.version}, the instance is {family}")
        elif addr.is_multicast or addr.is_unspecified or addr.is_loopback:
            c.err(pj, f"{peer!r} is not a host's address (multicast, unspecified or loopback)")
        elif (pool := _pool_of(addr, pools)) is not None:
            c.err(pj, f"{peer!r} is our own address (a VIP of pool {pool!r}), not a peer")
        elif str(addr) in peers:
            c.err(pj, f"duplicate peer {peer!r}")
        else:
            peers.append(str(addr))
    return peers


def _pool_of(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, pools: Sequence[Pool]
) -> str | None:
    for pool in pools:
        for first, last in pool.ranges:
            if first.version == address.version and first <= address <= last:  # type: ignore[operator]
                return pool.name
    return None


def _own(
    c: Checker,
    owners: dict[tuple[str, str], str],
    family: str,
    pool: str,
    path: str,
    name: str | None,
    every: bool = False,
) -> None:
    if (family, pool) in owners:
        how = " (no pools listed means every pool)" if every else ""
        c.err(
            path,
            f"pool {pool!r} is already owned by {family} instance {owners[(family, pool)]}{how}",
        )
    else:
        owners[(family, pool)] = f"{name!r}" if name else path


def _dns(c: Checker, value: object) -> DnsConfig:
    path = "dns"
    d = c.mapping(value, path, ("enabled", "listen", "zones", "ttl", "cluster_ips"))
    defaults = DnsConfig()
    listen: list[tuple[str, int]] = []
    lp = join_key(path, "listen")
    if isinstance(d.get("listen"), str):
        c.err(lp, f"must be a list of host:port, got a string: write [{d['listen']!r}]")
    else:
        for j, item in enumerate(c.seq(d.get("listen"), lp, "a list of host:port")):
            if not isinstance(item, str):
                c.err(join_index(lp, j), f"must be host:port, got {found(item)}")
                continue
            hp, problem = parse_listen(item)
            if hp is None:
                c.err(join_index(lp, j), problem or "invalid")
            elif hp in listen:
                c.err(join_index(lp, j), f"duplicate listen address {item!r}")
            else:
                listen.append(hp)
    zones: list[str] = []
    zp = join_key(path, "zones")
    for j, z in enumerate(c.seq(d.get("zones"), zp, "a list of zone names")):
        if not isinstance(z, str):
            c.err(join_index(zp, j), f"must be a zone name, got {found(z)}{quote_hint(z)}")
            continue
        zone = z.lower().removesuffix(".")
        problem = check_zone(zone)
        if problem:
            c.err(join_index(zp, j), f"{z!r} is not a valid DNS name: {problem}")
        elif zone in zones:
            c.err(join_index(zp, j), f"duplicate zone {zone!r}")
        else:
            zones.append(zone)
    enabled = c.boolean(d, "enabled", path, True)
    if enabled and "listen" in d and not d["listen"]:
        c.err(lp, "must not be empty while dns is enabled")
    if enabled and "zones" in d and not d["zones"]:
        c.err(zp, "must not be empty while dns is enabled")
    return DnsConfig(
        enabled=enabled,
        listen=tuple(listen) if "listen" in d else defaults.listen,
        zones=tuple(zones) if "zones" in d else defaults.zones,
        ttl=c.integer(d, "ttl", path, defaults.ttl, 0, 2_147_483_647),
        cluster_ips=c.boolean(d, "cluster_ips", path, False),
    )


def _health(c: Checker, value: object) -> HealthConfig:
    path = "health"
    d = c.mapping(
        value,
        path,
        ("enabled", "interval", "timeout", "rise", "fall", "kube_proxy_port", "max_in_flight"),
    )
    interval = c.duration(d, "interval", path, 2.0, 0.01, 3600.0)
    timeout = c.duration(d, "timeout", path, 1.0, 0.001, 3600.0)
    if timeout >= interval and ("timeout" in d or "interval" in d):
        c.err(
            join_key(path, "timeout"),
            f"must be shorter than health.interval ({fmt_seconds(interval)}),"
            f" got {fmt_seconds(timeout)}",
        )
    return HealthConfig(
        enabled=c.boolean(d, "enabled", path, True),
        interval=interval,
        timeout=timeout,
        rise=c.integer(d, "rise", path, 2, 1, 1000),
        fall=c.integer(d, "fall", path, 3, 1, 1000),
        kube_proxy_port=c.integer(d, "kube_proxy_port", path, 10256, 1, 65535),
        max_in_flight=c.integer(d, "max_in_flight", path, 1024, 1, 100_000),
    )


def _read_password(c: Checker, path: str, file_text: str) -> str | None:
    where = _resolve(c, file_text)
    try:
        st = os.stat(where)
        if not stat.S_ISREG(st.st_mode):
            c.err(path, f"{where!r} is not a regular file")
            return None
        if st.st_size > MAX_PASSWORD_FILE:
            c.err(path, f"{where!r} is too large for a password file")
            return None
        with open(where, "rb") as f:
            raw = f.read(MAX_PASSWORD_FILE + 1)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        c.err(path, f"cannot read {where!r}: {reason}")
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        c.err(path, f"{where!r} is not UTF-8 text")
        return None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password:
        c.err(path, f"{where!r} must hold the password on one line")
        return None
    return password


def _web(c: Checker, value: object) -> WebConfig:
    path = "web"
    d = c.mapping(value, path, ("listen", "basic_auth"))
    listen = WebConfig().listen
    if "listen" in d:
        v = d["listen"]
        if not isinstance(v, str):
            c.err(join_key(path, "listen"), f"must be host:port, got {found(v)}")
        else:
            hp, problem = parse_listen(v)
            if hp is None:
                c.err(join_key(path, "listen"), problem or "invalid")
            else:
                listen = hp
    ap = join_key(path, "basic_auth")
    a = c.mapping(d.get("basic_auth"), ap, ("username", "password", "password_file"))
    username = c.string(
        a,
        "username",
        ap,
        None,
        check=lambda s: "must not contain ':' (HTTP basic auth splits on it)" if ":" in s else None,
    )
    password = c.string(a, "password", ap, None)
    password_file = c.string(a, "password_file", ap, None)
    if "password" in a and "password_file" in a:
        c.err(ap, "set password or password_file, not both")
        password = None
    elif password_file is not None:
        password = _read_password(c, join_key(ap, "password_file"), password_file)
    has_pass = "password" in a or "password_file" in a
    if "username" in a and not has_pass:
        c.err(ap, "username needs password or password_file")
    elif has_pass and "username" not in a:
        c.err(ap, "password needs username")
    if username is None or password is None:
        username = password = None
    return WebConfig(listen=listen, username=username, password=password)


_SECTIONS = ("cluster", "pools", "dataplane", "ha", "dns", "health", "web", "state_dir")
STATE_DIR = "/var/lib/appliance"


def _parse(data: object, source: str, base_dir: Path | None) -> tuple[Config | None, Errors]:
    errors: Errors = []
    c = Checker(errors, base_dir)
    if data is None:
        c.err("(top level)", "the configuration is empty")
        return None, errors
    top = c.mapping(data, "", _SECTIONS, "a mapping of sections (cluster, pools, ...)")
    if not isinstance(data, dict):
        return None, errors
    pools = _pools(c, top.get("pools"))
    config = Config(
        pools=pools,
        cluster=_cluster(c, top.get("cluster")),
        dataplane=_dataplane(c, top.get("dataplane")),
        ha=_ha(c, top.get("ha"), pools),
        dns=_dns(c, top.get("dns")),
        health=_health(c, top.get("health")),
        web=_web(c, top.get("web")),
        state_dir=_resolve(c, c.string(top, "state_dir", "", STATE_DIR)),
        source=source,
    )
    return (None if errors else config), errors


def parse_config(
    data: object, source: str = "", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate what yaml.safe_load gave. Relative paths resolve against `base_dir`
    (kept as written when it is None). Raises ConfigError with every problem found."""
    config, errors = _parse(data, source, Path(base_dir) if base_dir is not None else None)
    if config is None:
        raise ConfigError(f"{p}: {m}" for p, m in errors)
    return config


# --- files --------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate appliance.yaml; every error line starts with `<file>:<line>:`."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([f"{name}: cannot read: {e.strerror or e}"]) from None
    try:
        doc = read_yaml(raw, name)
    except YamlError as e:
        raise ConfigError([str(e)]) from None
    if doc.data is None:
        raise ConfigError([f"{name}: the file is empty (or only comments)"])
    config, errors = _parse(doc.data, name, Path(name).resolve().parent)
    errors = doc.duplicates + errors
    if errors:

        def fmt(p: str, m: str) -> str:
            line = doc.line_of(p)
            return f"{name}:{line}: {p}: {m}" if line else f"{name}: {p}: {m}"

        raise ConfigError(fmt(p, m) for p, m in errors)
    assert config is not None
    return config

"""The `ha` section: the VRRP instances, which pools each owns, their peers, and what is
tracked (keepalived's track_interface)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from appliance.address import PoolRanges, parse_ip
from appliance.config.checker import Checker, found, join_index, join_key, suggest
from appliance.config.types import HaConfig, Pool, TrackConfig, TrackInterface, VrrpInstance
from appliance.config.values import FAMILIES, check_ifname, fmt_seconds
from appliance.model import Family

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
INSTANCE_KEYS = (
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
)


@dataclass
class _Seen:
    """What the instances read so far claimed, to find the next one's duplicates."""

    pools: Sequence[Pool]
    pool_names: list[str]
    names: dict[str, str] = field(default_factory=dict)  # name -> instance path
    vrids: dict[tuple[str, int], str] = field(default_factory=dict)  # (family, vrid) -> path
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (family, pool) -> path


def read_ha(c: Checker, value: object, pools: Sequence[Pool]) -> HaConfig:
    path = "ha"
    d = c.mapping(
        value,
        path,
        ("interface", "garp_count", "garp_interval", "garp_refresh", "instances", "track"),
    )
    interface = c.string(d, "interface", path, None, nullable=True, check=check_ifname)
    seen = _Seen(pools, list(dict.fromkeys(p.name for p in pools if p.name)))
    instances: list[VrrpInstance] = []
    ip_ = join_key(path, "instances")
    items = c.seq(d.get("instances"), ip_, "a list of VRRP instances")
    if items and d.get("interface") is None:
        c.err(ip_, "VRRP instances need ha.interface (the interface the adverts go out on)")
    for i, item in enumerate(items):
        p = join_index(ip_, i)
        e = c.mapping(item, p, INSTANCE_KEYS, nullable=False)
        if isinstance(item, dict):
            instances.append(_instance(c, e, p, seen))
    return HaConfig(
        interface=interface,
        instances=tuple(instances),
        garp_count=c.integer(d, "garp_count", path, 5, 0, 1000),
        garp_interval=c.duration(d, "garp_interval", path, 0.02, 0.0, 60.0),
        garp_refresh=c.duration(d, "garp_refresh", path, 0.0, 0.0, 86400.0),
        track=_track(c, d.get("track"), join_key(path, "track"), interface),
    )


def _instance(c: Checker, e: Mapping[str, Any], p: str, seen: _Seen) -> VrrpInstance:
    name = _instance_name(c, e, p, seen)
    family = cast(Family, c.choice(e, "family", p, "IPv4", FAMILIES))
    vrid = _vrid(c, e, p, family, seen)
    priority = c.integer(e, "priority", p, 100, 1, 255)
    if priority == 255:
        c.err(
            join_key(p, "priority"),
            "must be an integer from 1 to 254, got 255 (255 means the address owner,"
            " which a VIP holder never is)",
        )
        priority = 100
    owned = _owned_pools(c, e, p, family, name, seen)
    peers = _peers(c, e, p, "unicast_peers", family, seen.pools)
    accepted = _peers(c, e, p, "peers", family, seen.pools)
    as_v2 = c.boolean(e, "v3_checksum_as_v2", p, False)
    if as_v2 and family != "IPv4":
        c.err(join_key(p, "v3_checksum_as_v2"), "applies only to IPv4 instances")
        as_v2 = False
    use_vmac = _use_vmac(c, e, p, family, owned, seen.pools)
    return VrrpInstance(
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


def _instance_name(c: Checker, e: Mapping[str, Any], p: str, seen: _Seen) -> str | None:
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
        if name in seen.names:
            also = seen.names[name]
            c.err(join_key(p, "name"), f"duplicate instance name {name!r} (also {also})")
        else:
            seen.names[name] = p
    return name


def _vrid(c: Checker, e: Mapping[str, Any], p: str, family: Family, seen: _Seen) -> int:
    """The VRID, unique per family (0 when missing or bad: an error says why)."""
    if "vrid" not in e:
        c.err(join_key(p, "vrid"), "required: an integer from 1 to 255")
    vrid = c.integer(e, "vrid", p, 0, 1, 255)
    if vrid:
        if (family, vrid) in seen.vrids:
            c.err(
                join_key(p, "vrid"),
                f"duplicate VRID {vrid} for {family} (also {seen.vrids[(family, vrid)]})",
            )
        else:
            seen.vrids[(family, vrid)] = p
    return vrid


def _owned_pools(
    c: Checker, e: Mapping[str, Any], p: str, family: Family, name: str | None, seen: _Seen
) -> list[str]:
    """The pools the instance names; each pool is owned by one instance of a family."""
    owned: list[str] = []
    pool_names = seen.pool_names
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
            _own(c, seen.owners, family, pn, join_index(pp, j), name)
    if not e.get("pools"):
        for pn in pool_names:
            _own(c, seen.owners, family, pn, pp, name, every=True)
    return owned


def _use_vmac(
    c: Checker,
    e: Mapping[str, Any],
    p: str,
    family: Family,
    owned: Sequence[str],
    pools: Sequence[Pool],
) -> bool:
    use_vmac = c.boolean(e, "use_vmac", p, False)
    if use_vmac:
        six = [pl.name for pl in pools if (pl.name in owned or not owned) and "IPv6" in pl.families]
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
    return use_vmac


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
        addr = parse_ip(peer.strip()) if isinstance(peer, str) else None
        pj = join_index(kp, j)
        if addr is None:
            c.err(pj, f"must be an IP address, got {found(peer)}")
        elif f"IPv{addr.version}" != family:
            c.err(pj, f"{peer!r} is IPv{addr.version}, the instance is {family}")
        elif addr.is_multicast or addr.is_unspecified or addr.is_loopback:
            c.err(pj, f"{peer!r} is not a host's address (multicast, unspecified or loopback)")
        elif (pool := PoolRanges.of(pools).pool_of(addr)) is not None:
            c.err(pj, f"{peer!r} is our own address (a VIP of pool {pool.name!r}), not a peer")
        elif str(addr) in peers:
            c.err(pj, f"duplicate peer {peer!r}")
        else:
            peers.append(str(addr))
    return peers


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

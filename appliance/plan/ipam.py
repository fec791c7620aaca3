"""VIP allocation: pools, requested IPs, sharing, dual-stack. Pure and deterministic.

Two LB hosts that see the same Services compute the same VIPs, and a VIP stays where it
is while it is valid:

1. Claims, oldest Service first (creationTimestamp, then uid, then name): requested
   addresses (`appliance.io/load-balancer-ips`, `spec.loadBalancerIP`) and the addresses the
   Service already holds (its status, or the previous plan). A requested address in use
   by an older Service is a problem for the younger one; a held address that became
   invalid is dropped and the family is re-allocated below. A requested address is never
   auto-assigned to another Service, even while its request fails for another reason.
2. Auto-assignment, oldest first, for the families still missing: with a sharing key an
   address already used by compatible Services first, else the lowest free address of the
   first pool that has one. Claimed addresses are never handed out here, so a Service
   created later never takes a VIP another Service is holding.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from appliance.address import IPAddress, PoolRanges, family_of_version, parse_ip, version_of
from appliance.config import Config, Pool
from appliance.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_LOAD_BALANCER_IPS,
    Allocation,
    Family,
    Problem,
    Service,
)


def age_key(svc: Service) -> tuple[bool, str, str, str]:
    """Older first; Services without a timestamp (hand-written manifests) after those with one."""
    return (not svc.creation_timestamp, svc.creation_timestamp, svc.uid, svc.key)


def wanted_families(svc: Service, default: Family) -> tuple[tuple[Family, ...], bool]:
    """The families a Service asks for, primary first, and whether all of them are required."""
    primary: Family = svc.ip_families[0] if svc.ip_families else default
    other: Family = "IPv6" if primary == "IPv4" else "IPv4"
    policy = svc.ip_family_policy or "SingleStack"
    if policy == "RequireDualStack":
        return (primary, other), True
    if policy == "PreferDualStack":
        return (primary, other), False
    return (primary,), True


@dataclass(slots=True)
class _Holder:
    service: Service
    share_key: str | None
    ports: frozenset[tuple[int, str]]
    backend: str | None  # the selector of a Local Service (MetalLB's rule for sharing)


def _holder(svc: Service) -> _Holder:
    share = svc.annotations.get(ANN_ALLOW_SHARED_IP) or None
    backend = None
    if svc.external_traffic_policy == "Local":
        backend = ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
    return _Holder(svc, share, frozenset((p.port, p.protocol) for p in svc.ports), backend)


def _sharing_conflict(new: _Holder, holders: Sequence[_Holder]) -> str | None:
    """Why `new` may not share an address with `holders`, or None when it may."""
    for h in holders:
        other = h.service.key
        if new.share_key is None or h.share_key is None:
            return f"in use by {other}, and sharing needs annotation {ANN_ALLOW_SHARED_IP} on both"
        if new.share_key != h.share_key:
            return f"in use by {other} with sharing key {h.share_key!r}, not {new.share_key!r}"
        clash = new.ports & h.ports
        if clash:
            port, proto = sorted(clash)[0]
            return f"in use by {other}, which has port {port}/{proto} too"
        if new.backend is not None and h.backend is not None and new.backend != h.backend:
            return f"in use by {other}: Local Services may share only with the same selector"
    return None


@dataclass(slots=True)
class _PoolIndex:
    """Pools as integer ranges, for membership tests and a forward-only free search."""

    pools: tuple[Pool, ...]
    cursor: dict[tuple[str, int], int] = field(default_factory=dict)
    held: PoolRanges[Pool] = field(init=False)

    def __post_init__(self) -> None:
        self.held = PoolRanges.of(self.pools)
        for pool in self.pools:
            for i, (first, _) in enumerate(pool.ranges):
                self.cursor[(pool.name, i)] = int(first)

    def pool_of(self, ip: IPAddress) -> Pool | None:
        return self.held.pool_of(ip)


def _text(n: int, version: int) -> str:
    """Canonical text of an address; inet_ntoa is much cheaper than ipaddress for IPv4."""
    if version == 4:
        return socket.inet_ntoa(n.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(n))


def _buggy(ip: int, version: int, pool: Pool) -> bool:
    return pool.avoid_buggy_ips and version == 4 and (ip & 0xFF) in (0, 255)


def serves(pool: Pool, svc: Service) -> bool:
    """Whether a pool's namespace and label selectors admit a Service."""
    if pool.namespaces and svc.namespace not in pool.namespaces:
        return False
    return pool.service_selector.matches(svc.labels)


class _Allocator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.index = _PoolIndex(config.pools)
        self.by_name = {p.name: p for p in config.pools}
        self.used: dict[str, list[_Holder]] = {}  # address -> holders
        self.shared: dict[str, list[str]] = {}  # sharing key -> addresses, in order of use
        self.reserved: set[str] = set()  # requested addresses: never auto-assigned to others
        self.clashes: list[tuple[_Holder, str]] = []  # requests refused for an address in use
        self.problems: list[Problem] = []
        self.result: dict[str, dict[Family, tuple[str, str]]] = {}  # key -> family -> (ip, pool)
        # Without restricted pools every Service without a pool annotation sees the same list.
        self.open_pools: list[Pool] | str | None = None
        if not any(p.restricted for p in config.pools):
            auto = [p for p in config.pools if p.auto_assign]
            self.open_pools = auto or "no auto-assign pool serves this namespace or these labels"

    def problem(self, svc: Service, reason: str) -> None:
        self.problems.append(Problem("Service", svc.key, reason))

    def candidate_pools(self, svc: Service) -> list[Pool] | str:
        """Pools that may auto-assign to svc, in preference order, or why there are none."""
        named = svc.annotations.get(ANN_ADDRESS_POOL)
        if not named and self.open_pools is not None:
            return self.open_pools
        if named:
            pool = self.by_name.get(named)
            if pool is None:
                return f"annotation {ANN_ADDRESS_POOL}: no pool named {named!r}"
            if not serves(pool, svc):
                return f"pool {named!r} does not serve this namespace or these labels"
            return [pool]
        pools = [p for p in self.config.pools if p.auto_assign and serves(p, svc)]
        # A pool reserved for some Services is preferred by them over a pool for anyone.
        pools.sort(key=lambda p: not p.restricted)
        if not pools:
            return "no auto-assign pool serves this namespace or these labels"
        return pools

    def take(self, svc: Service, holder: _Holder, family: Family, ip: str, pool: str) -> None:
        holders = self.used.setdefault(ip, [])
        if not holders and holder.share_key is not None:
            self.shared.setdefault(holder.share_key, []).append(ip)
        holders.append(holder)
        self.result.setdefault(svc.key, {})[family] = (ip, pool)

    # -- pass 1 -----------------------------------------------------------------------

    def requested(self, svc: Service) -> list[str] | None:
        raw = svc.annotations.get(ANN_LOAD_BALANCER_IPS)
        if raw is not None:
            return [s.strip() for s in raw.split(",") if s.strip()]
        if svc.load_balancer_ip:
            return [svc.load_balancer_ip]
        return None

    def claim_requested(self, svc: Service, holder: _Holder, asked: list[str]) -> None:
        """All of the requested addresses, or none and a problem.

        What is wrong with the request itself is said before any clash with other Services,
        and a well-formed request reserves its addresses from auto-assignment even when it
        fails: the reason and the allocation then do not depend on the order things happened.
        """
        families, required = wanted_families(svc, self.config.cluster.default_ip_family)
        picked: dict[Family, tuple[str, Pool]] = {}
        named = svc.annotations.get(ANN_ADDRESS_POOL)
        for text in asked:
            ip = parse_ip(text.strip())
            if ip is None:
                self.problem(svc, f"requested address {text!r} is not an IP address")
                return
            fam = family_of_version(ip.version)
            if fam in picked:
                self.problem(svc, f"requested addresses name two {fam} addresses")
                return
            if svc.ip_families and fam not in families:
                self.problem(svc, f"requested address {ip} is {fam}, the Service is not")
                return
            pool = self.index.pool_of(ip)
            if pool is None:
                self.problem(svc, f"requested address {ip} is in no address pool")
                return
            if named and pool.name != named:
                self.problem(svc, f"requested address {ip} is in pool {pool.name!r}, not {named!r}")
                return
            if not serves(pool, svc):
                self.problem(
                    svc,
                    f"requested address {ip} is in pool {pool.name!r}, which does not serve "
                    "this namespace or these labels",
                )
                return
            picked[fam] = (str(ip), pool)
        if svc.ip_families and required and set(picked) != set(families):
            missing = ", ".join(f for f in families if f not in picked)
            policy = svc.ip_family_policy or "SingleStack"
            self.problem(svc, f"{policy}: no {missing} address requested")
            return
        self.reserved.update(ip_text for ip_text, _ in picked.values())
        for ip_text, _ in picked.values():
            if _sharing_conflict(holder, self.used.get(ip_text, ())):
                self.clashes.append((holder, ip_text))  # said once every holder is known
                return
        for fam, (ip_text, pool) in picked.items():
            self.take(svc, holder, fam, ip_text, pool.name)

    def claim_held(self, svc: Service, holder: _Holder, held: Iterable[str]) -> None:
        families, _ = wanted_families(svc, self.config.cluster.default_ip_family)
        pools = self.candidate_pools(svc)
        if isinstance(pools, str):
            return  # pass 2 reports it
        names = {p.name for p in pools}
        for text in held:
            ip = parse_ip(text.strip())
            if ip is None:
                continue
            fam = family_of_version(ip.version)
            if fam not in families or fam in self.result.get(svc.key, {}):
                continue
            pool = self.index.pool_of(ip)
            if pool is None or pool.name not in names or _buggy(int(ip), ip.version, pool):
                continue
            if _sharing_conflict(holder, self.used.get(str(ip), ())) is None:
                self.take(svc, holder, fam, str(ip), pool.name)

    # -- pass 2 -----------------------------------------------------------------------

    def free_address(self, pool: Pool, version: int) -> str | None:
        for i, (first, last) in enumerate(pool.ranges):
            if first.version != version:
                continue
            n, hi = self.index.cursor[(pool.name, i)], int(last)
            while n <= hi:
                text = _text(n, version)
                if (
                    text not in self.used
                    and text not in self.reserved
                    and not _buggy(n, version, pool)
                ):
                    self.index.cursor[(pool.name, i)] = n
                    return text
                n += 1
            self.index.cursor[(pool.name, i)] = n
        return None

    def shared_address(
        self, holder: _Holder, pools: list[Pool], version: int
    ) -> tuple[str, str] | None:
        if holder.share_key is None:
            return None
        names = {p.name for p in pools}
        found: list[tuple[int, str, str]] = []
        for text in self.shared.get(holder.share_key, ()):
            ip = ipaddress.ip_address(text)
            holders = self.used[text]
            if ip.version != version:
                continue
            pool = self.index.pool_of(ip)
            if pool is None or pool.name not in names:
                continue
            if _sharing_conflict(holder, holders) is None:
                found.append((int(ip), text, pool.name))
        if not found:
            return None
        _, text, pool_name = min(found)
        return text, pool_name

    def auto_assign(self, svc: Service, holder: _Holder) -> None:
        families, required = wanted_families(svc, self.config.cluster.default_ip_family)
        have = self.result.get(svc.key, {})
        missing = [f for f in families if f not in have]
        if not missing:
            return
        pools = self.candidate_pools(svc)
        if isinstance(pools, str):
            self.problem(svc, pools)
            return
        found: dict[Family, tuple[str, str]] = {}
        for fam in missing:
            version = version_of(fam)
            fam_pools = [p for p in pools if fam in p.families]
            got = self.shared_address(holder, fam_pools, version)
            if got is None:
                for pool in fam_pools:
                    ip = self.free_address(pool, version)
                    if ip is not None:
                        got = (ip, pool.name)
                        break
            if got is not None:
                found[fam] = got
            elif required:
                names = ", ".join(repr(p.name) for p in pools)
                if len(families) == 1:
                    self.problem(svc, f"no free {fam} address in pool {names}")
                else:
                    # Which family ran out first depends on who came before; the pair does not.
                    pair = " and ".join(families)
                    self.problem(svc, f"RequireDualStack: no free {pair} pair in pool {names}")
                    self.release(svc)
                return
            # PreferDualStack: the family that has no free address is left out quietly
        for fam, (ip, pool_name) in found.items():
            self.take(svc, holder, fam, ip, pool_name)

    def release(self, svc: Service) -> None:
        """Give back what a Service held, when it cannot have all it requires."""
        for ip, _ in self.result.pop(svc.key, {}).values():
            holders = [h for h in self.used.get(ip, ()) if h.service.key != svc.key]
            if holders:
                self.used[ip] = holders
                continue
            self.used.pop(ip, None)
            for addresses in self.shared.values():
                if ip in addresses:
                    addresses.remove(ip)
            # The free search resumes from a cursor: move it back to the returned address.
            address = ipaddress.ip_address(ip)
            n = int(address)
            for pool in self.config.pools:
                for i, (first, last) in enumerate(pool.ranges):
                    if first.version == address.version and int(first) <= n <= int(last):
                        key = (pool.name, i)
                        self.index.cursor[key] = min(self.index.cursor[key], n)

    def allocations(self, services: Sequence[Service]) -> dict[str, Allocation]:
        out: dict[str, Allocation] = {}
        for svc in services:
            got = self.result.get(svc.key)
            if not got:
                continue
            families, _ = wanted_families(svc, self.config.cluster.default_ip_family)
            order = [f for f in families if f in got] + [f for f in got if f not in families]
            out[svc.key] = Allocation(
                service=svc.key,
                addresses=tuple(got[f][0] for f in order),
                pools=tuple(got[f][1] for f in order),
                shared_key=svc.annotations.get(ANN_ALLOW_SHARED_IP) or None,
            )
        return out


def allocate(
    services: Iterable[Service],
    config: Config,
    previous: Mapping[str, Allocation] | None = None,
) -> tuple[dict[str, Allocation], list[Problem]]:
    """VIPs for the LoadBalancer Services that are ours; `previous` is the last plan's
    allocations, held like a status (after it)."""
    ordered = sorted(services, key=age_key)
    alloc = _Allocator(config)
    holders = {svc.key: _holder(svc) for svc in ordered}
    asks = {svc.key: alloc.requested(svc) for svc in ordered}
    for svc in ordered:
        asked = asks[svc.key]
        if asked is not None:
            alloc.claim_requested(svc, holders[svc.key], asked)
            continue
        # The status first; what the last plan (or the state file) gave next, for when the
        # status lags behind (not yet written, or written by someone else) or is empty (a
        # files source, write_status false). The status wins where they disagree: it is the
        # one store every LB host reads; the state file is this host's memory, maybe stale.
        held: tuple[str, ...] = svc.status_ingress_ips
        if previous and svc.key in previous:
            held = tuple(dict.fromkeys(held + previous[svc.key].addresses))
        if held:
            alloc.claim_held(svc, holders[svc.key], held)
    for svc in ordered:
        if asks[svc.key] is None:
            alloc.auto_assign(svc, holders[svc.key])
    # A refused request names who holds the address in the end, oldest first: the same
    # answer however the holders came by it (claimed now, or shared in pass 2 last time).
    for holder, ip in alloc.clashes:
        final = sorted(alloc.used.get(ip, ()), key=lambda h: age_key(h.service))
        why = _sharing_conflict(holder, final)
        alloc.problem(holder.service, f"requested address {ip} is {why}")
    alloc.problems.sort(key=lambda p: p.key)
    return alloc.allocations(ordered), alloc.problems

"""Virtual services -> nftables objects (pure: no kernel, no I/O).

The layout follows kube-proxy's nftables mode, in one `inet` table of our own:

- `vips4` / `vips6`: verdict maps `vip . l4proto . port : goto vs-...`, looked up once from
  the `prerouting` nat chain;
- one chain per virtual service `vs-<proto>-<vip>-<port>`: source ranges, the masquerade
  mark, then a `numgen` (round robin) or `jhash` (source hashing, fixed seed) slot number;
  the DNAT looks up VIP . port . slot -> NodeIP . NodePort in a map shared by all services
  of that family and protocol (`dst4-tcp` ...);
- with ClientIP affinity, kube-proxy's shape instead: `eps4-tcp` ... maps the slot to one
  chain per real server `ep-...` that records the client in a timeout set and DNATs;
- `postrouting` masquerades what we marked, so a node whose default route is not this host
  still answers through it.

Because endpoint selection lives in a named map, a one-endpoint change is a handful of
element updates, not a rewrite of the table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import reduce
from math import gcd

from appliance.address import host_port
from appliance.model import VirtualService

MASQ_MARK = 0x4000  # kube-proxy's masquerade bit; the same meaning if both share a host
DEFAULT_TABLE = "appliance"
DEFAULT_SEED = 0x61707031  # jhash needs a fixed seed, or every load remaps clients
ROUND_ROBIN = frozenset({"rr", "wrr"})
HASHING = frozenset({"sh", "dh", "mh"})
FALLBACK = frozenset({"lc", "wlc", "sed", "nq"})  # need connection counts nftables lacks
BUCKETS = 32  # slot maps per family and protocol (see fragment())
MAX_SLOTS = 1024  # weights are scaled down to keep a map this small at most


@dataclass(frozen=True, slots=True)
class NftSet:
    """A named set or map: its declaration (what `add set|map` says) and its elements."""

    name: str
    kind: str  # "set" | "map"
    decl: str
    elements: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NftChain:
    name: str
    rules: tuple[str, ...]
    hook: str = ""  # "type nat hook prerouting priority dstnat; policy accept;" for base chains
    shared: bool = False  # used by many services; its rules follow from its name


@dataclass(frozen=True, slots=True)
class Fragment:
    """Everything one virtual service contributes to the table."""

    sets: tuple[NftSet, ...]  # its own (affinity, source ranges)
    chains: tuple[NftChain, ...]
    shared: tuple[tuple[str, str], ...]  # (shared map, element): "vips4", "dst4-tcp" ...
    warnings: tuple[str, ...] = ()


def ident(address: str) -> str:
    """An address as part of an nft identifier (colons are not allowed there)."""
    return address.replace(":", "_")


def vs_id(vs: VirtualService) -> str:
    return f"{vs.protocol.lower()}-{ident(vs.vip)}-{vs.port}"


def _slots(vs: VirtualService) -> list[int]:
    """Indexes into vs.real_servers, one per slot: weights (gcd-reduced) for wrr and the
    hashing/fallback schedulers, one slot each for rr (IPVS's rr ignores weights too)."""
    live = [(i, rs.weight) for i, rs in enumerate(vs.real_servers) if rs.weight > 0]
    if not live:
        return []
    if vs.scheduler == "rr":
        return [i for i, _ in live]
    g = reduce(gcd, (w for _, w in live))
    weights = [(i, w // g) for i, w in live]
    total = sum(w for _, w in weights)
    if total > MAX_SLOTS:  # keep proportions, at least one slot each
        weights = [(i, max(1, w * MAX_SLOTS // total)) for i, w in weights]
    # Interleave (A B A B A) rather than block (A A A B B): steadier spread for numgen inc.
    out: list[int] = []
    remaining = dict(weights)
    while remaining:
        for i, _ in weights:
            if remaining.get(i, 0) > 0:
                out.append(i)
                remaining[i] -= 1
                if remaining[i] == 0:
                    del remaining[i]
    return out


def collapse_ranges(ranges: Iterable[str], version: int) -> tuple[tuple[str, ...], list[str]]:
    """Canonical, non-overlapping networks (nft refuses overlapping interval elements)."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    bad: list[str] = []
    for r in ranges:
        try:
            net = ipaddress.ip_network(r.strip(), strict=False)
        except ValueError:
            bad.append(r)
            continue
        if net.version == version:
            nets.append(net)
        else:
            bad.append(r)
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    merged = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    return tuple(str(n) for n in merged), bad


@dataclass(slots=True)
class _Draft:
    """A service's Fragment while fragment()'s steps add to it, with its family's words."""

    vs: VirtualService
    ipf: str  # "ip" | "ip6"
    addr_type: str  # "ipv4_addr" | "ipv6_addr"
    fam: str  # "4" | "6"
    proto: str
    vid: str
    sets: list[NftSet] = field(default_factory=list)
    chains: list[NftChain] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # of the service's own chain vs-<vid>
    shared: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, vs: VirtualService) -> _Draft:
        v6 = vs.family == "IPv6"
        return cls(
            vs,
            ipf="ip6" if v6 else "ip",
            addr_type="ipv6_addr" if v6 else "ipv4_addr",
            fam="6" if v6 else "4",
            proto=vs.protocol.lower(),
            vid=vs_id(vs),
        )

    def warn(self, what: str) -> None:
        self.warnings.append(f"{self.vs.service} {self.vid}: {what}")

    def vip_entry(self, verdict: str) -> tuple[str, str]:
        vs = self.vs
        return (f"vips{self.fam}", f"{vs.vip} . {self.proto} . {vs.port} : {verdict}")

    def done(self) -> Fragment:
        return Fragment(
            tuple(self.sets), tuple(self.chains), tuple(self.shared), tuple(self.warnings)
        )


def fragment(vs: VirtualService, seed: int = DEFAULT_SEED) -> Fragment:
    d = _Draft.of(vs)
    chain = f"vs-{d.vid}"
    _source_filter(d)
    if vs.forwarding != "nat":
        d.warn(f"forwarding {vs.forwarding} is IPVS-only; nftables uses nat")
    d.rules.append(f"meta mark set meta mark | {MASQ_MARK:#x}")
    slots = _slots(vs)
    d.shared.append(d.vip_entry(f"goto {chain}"))
    ep_name = _affinity_chains(d, sorted({vs.real_servers[i].address for i in slots}))
    # The slot is looked up in a map shared by the services of this family and protocol
    # that hash to the same bucket, keyed by VIP . port . slot. One small map per service
    # is slow (nft fetches every set's definition before any change; 20,000 sets take
    # 0.2 s); one map for all is slow too (the kernel checks each element against every
    # rule bound to the map: rules x elements). Buckets keep both small.
    lookup = f"{d.ipf} daddr . {d.proto} dport . {_pick(d, len(slots), seed)}"
    bucket = f"{d.fam}-{d.proto}-{zlib.crc32(f'{vs.vip}|{vs.port}'.encode()) % BUCKETS:02d}"
    if not slots:
        d.rules.append("drop")  # no endpoints: refuse rather than fall through to the host
        if vs.source_ranges is None:
            d.shared[0] = d.vip_entry("drop")
            return d.done()
    elif ep_name:
        eps = f"eps{bucket}"
        for n, i in enumerate(slots):
            target = ep_name[vs.real_servers[i].address]
            d.shared.append((eps, f"{vs.vip} . {vs.port} . {n} : goto {target}"))
        d.rules.append(f"{lookup} vmap @{eps}")
    else:
        dst = f"dst{bucket}"
        for n, i in enumerate(slots):
            address = vs.real_servers[i].address
            d.shared.append((dst, f"{vs.vip} . {vs.port} . {n} : {address} . {vs.real_port}"))
        dnat = f"meta l4proto {d.proto} dnat {d.ipf} addr . port to {lookup} map @{dst}"
        if vs.source_ranges is None:
            # Nothing of its own to check: jump straight to the chain shared by every such
            # service of this bucket, scheduler and slot count. 20,000 services then need
            # a few hundred chains, not 20,000 (nft lists every chain before any change).
            # Those services share the numgen counter: each still gets an even spread.
            tag = ("hd" if vs.scheduler == "dh" else "hs") if vs.scheduler in HASHING else "n"
            lb = f"lb{bucket}-{tag}{len(slots)}"
            d.chains.append(NftChain(lb, (d.rules[-1], dnat), shared=True))
            d.shared[0] = d.vip_entry(f"goto {lb}")
            return d.done()
        d.rules.append(dnat)
    d.chains.append(NftChain(chain, tuple(d.rules)))
    return d.done()


def _source_filter(d: _Draft) -> None:
    """loadBalancerSourceRanges: a set of the allowed sources and a drop for the rest."""
    if d.vs.source_ranges is None:
        return
    ranges, bad = collapse_ranges(d.vs.source_ranges, int(d.fam))
    for r in bad:
        d.warn(f"source range {r!r} ignored")
    if ranges:
        src = f"src-{d.vid}"
        d.sets.append(NftSet(src, "set", f"type {d.addr_type}; flags interval;", ranges))
        d.rules.append(f"{d.ipf} saddr != @{src} drop")
    else:
        d.rules.append("drop")  # ranges listed, none of this family: nobody may connect


def _affinity_chains(d: _Draft, live: list[str]) -> dict[str, str]:
    """ClientIP affinity, kube-proxy's shape: a chain per endpoint records the client in a
    timeout set, then DNATs. Real server address -> its chain; empty without affinity."""
    vs = d.vs
    if vs.persistence_timeout <= 0:
        return {}
    ep_name = {a: f"ep-{d.vid}-{ident(a)}" for a in live}
    for address in live:
        aff = f"aff-{d.vid}-{ident(address)}"
        decl = f"type {d.addr_type}; flags dynamic,timeout; timeout {vs.persistence_timeout}s;"
        d.sets.append(NftSet(aff, "set", decl))
        d.rules.append(f"{d.ipf} saddr @{aff} goto {ep_name[address]}")
        ep_rules = (
            f"update @{aff} {{ {d.ipf} saddr }}",
            f"meta l4proto {d.proto} dnat {d.ipf} to {host_port(address, vs.real_port)}",
        )
        d.chains.append(NftChain(ep_name[address], ep_rules))
    return ep_name


def _pick(d: _Draft, slots: int, seed: int) -> str:
    """The expression that picks a slot: jhash for the hashing schedulers, numgen else."""
    scheduler = d.vs.scheduler
    if scheduler in HASHING:
        key = f"{d.ipf} daddr" if scheduler == "dh" else f"{d.ipf} saddr"
        return f"jhash {key} mod {slots} seed {seed:#x}"
    if scheduler in FALLBACK:
        d.warn(f"scheduler {scheduler} needs connection counts; nftables uses weighted round robin")
    elif scheduler not in ROUND_ROBIN:
        d.warn(f"unknown scheduler {scheduler!r}; using round robin")
    return f"numgen inc mod {slots}"


def base_objects() -> tuple[tuple[NftSet, ...], tuple[NftChain, ...]]:
    """The fixed skeleton: the shared maps and the three hooked chains."""
    key = "inet_proto . inet_service : verdict;"
    sets: list[NftSet] = [
        NftSet("vips4", "map", f"type ipv4_addr . {key}"),
        NftSet("vips6", "map", f"type ipv6_addr . {key}"),
    ]
    # `{proto} dport`, not `th dport`: nft 1.0.6 cannot add a rule that uses a map it
    # reads back from the kernel with `th` in its typeof ("conflicting protocols").
    # "mod 1" is fixed on purpose: the real modulus lives in each service's rule.
    for fam, ipf in (("4", "ip"), ("6", "ip6")):
        for proto in ("tcp", "udp", "sctp"):
            k = f"typeof {ipf} daddr . {proto} dport . numgen inc mod 1"
            for b in range(BUCKETS):
                name = f"{fam}-{proto}-{b:02d}"
                sets.append(NftSet(f"dst{name}", "map", f"{k} : {ipf} daddr . {proto} dport;"))
                sets.append(NftSet(f"eps{name}", "map", f"{k} : verdict;"))
    chains = (
        NftChain(
            "prerouting",
            (
                "ip daddr . meta l4proto . th dport vmap @vips4",
                "ip6 daddr . meta l4proto . th dport vmap @vips6",
            ),
            "type nat hook prerouting priority dstnat; policy accept;",
        ),
        # Locally originated traffic to a VIP (health checks, curl on the LB host).
        NftChain(
            "output",
            (
                "ip daddr . meta l4proto . th dport vmap @vips4",
                "ip6 daddr . meta l4proto . th dport vmap @vips6",
            ),
            "type nat hook output priority -100; policy accept;",
        ),
        NftChain(
            "postrouting",
            (f"meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade",),
            "type nat hook postrouting priority srcnat; policy accept;",
        ),
    )
    return tuple(sets), chains


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The whole table as objects, keyed by name."""

    sets: Mapping[str, NftSet]
    chains: Mapping[str, NftChain]
    warnings: tuple[str, ...] = ()


def build(fragments: Iterable[Fragment]) -> Ruleset:
    base_sets, base_chains = base_objects()
    sets = {s.name: s for s in base_sets}
    chains: dict[str, NftChain] = {}
    shared: dict[str, list[str]] = {s.name: [] for s in base_sets}
    warnings: list[str] = []
    for f in fragments:
        for s in f.sets:
            sets[s.name] = s
        for c in f.chains:
            chains[c.name] = c
        for name, element in f.shared:
            shared[name].append(element)
        warnings.extend(f.warnings)
    for name, elements in shared.items():
        sets[name] = NftSet(name, "map", sets[name].decl, tuple(elements))
    for c in base_chains:
        chains[c.name] = c
    return Ruleset(sets, chains, tuple(warnings))


def _element_cmd(verb: str, table: str, name: str, elements: Iterable[str]) -> list[str]:
    out: list[str] = []
    batch: list[str] = []
    for e in elements:
        batch.append(e)
        if len(batch) == 500:  # keep lines readable; one transaction regardless
            out.append(f"{verb} element inet {table} {name} {{ {', '.join(batch)} }}")
            batch = []
    if batch:
        out.append(f"{verb} element inet {table} {name} {{ {', '.join(batch)} }}")
    return out


def render_full(ruleset: Ruleset, table: str, marker: str = "") -> str:
    """One atomic script that replaces our table (and only ours) with `ruleset`."""
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f'add table inet {table} {{ comment "managed by appliance; do not edit"; }}',
    ]
    for s in ruleset.sets.values():
        lines.append(f"add {s.kind} inet {table} {s.name} {{ {s.decl} }}")
    chains = list(ruleset.chains.values())
    for c in chains:
        spec = f" {{ {c.hook} }}" if c.hook else ""
        lines.append(f"add chain inet {table} {c.name}{spec}")
    lines.append(f"add set inet {table} generation {{ type ipv6_addr; }}")
    for c in chains:
        lines.extend(f"add rule inet {table} {c.name} {r}" for r in c.rules)
    if marker:
        lines.append(f"add element inet {table} generation {{ {marker} }}")
    for s in ruleset.sets.values():
        lines.extend(_element_cmd("add", table, s.name, s.elements))
    return "\n".join(lines) + "\n"


FORMAT = "v1"  # bump when the generated layout changes: old markers then never match


def digest(f: Fragment) -> int:
    """A stable fingerprint of one service's program: the text it puts in the table."""
    parts = [FORMAT]
    for s in f.sets:
        parts.extend((s.name, s.kind, s.decl, *s.elements))
    for c in f.chains:
        parts.extend((c.name, c.hook, *c.rules))
    for name, element in f.shared:
        parts.extend((name, element))
    h = hashlib.blake2b("\0".join(parts).encode(), digest_size=16)
    return int.from_bytes(h.digest())


def marker_of(total: int) -> str:
    """The table's fingerprint: the sum of its services' digests, so one change updates it
    without walking the other 19,999 services, and order does not matter. Written as the
    only element of a set of IPv6 addresses (128 bits): element updates are the cheapest
    thing nft does."""
    return str(ipaddress.IPv6Address(total % (1 << 128)))


def marker_cmds(table: str, marker: str) -> list[str]:
    return [
        f"flush set inet {table} generation",
        f"add element inet {table} generation {{ {marker} }}",
    ]


@dataclass(frozen=True, slots=True)
class Delta:
    """An incremental transaction, or None-able parts of it, between two rulesets."""

    commands: tuple[str, ...]
    needs_full: bool  # a set declaration changed: only a reload expresses that


def diff(old: Ruleset, new: Ruleset, table: str, present: Collection[str] = frozenset()) -> Delta:
    """Commands that turn `old` into `new`, in an order the kernel accepts in one
    transaction: create, rewrite, update elements, then delete what nothing references.

    Callers pass rulesets built from the changed services only (names are per service),
    so a one-service change costs one service, not a walk of 200,000 objects. Shared
    chains are created when missing from `present` and never deleted here (others may
    still jump to them; a full load drops the unused ones).
    """
    names = set(old.sets) | set(new.sets)
    chain_names = set(old.chains) | set(new.chains)
    add_decl: list[str] = []
    rewrite: list[str] = []
    elem_del: list[str] = []
    elem_add: list[str] = []
    drop_chains: list[str] = []
    drop_sets: list[str] = []
    for name in sorted(names):
        o, n = old.sets.get(name), new.sets.get(name)
        if o == n:
            continue
        if n is None:
            if o is not None:
                drop_sets.append(f"delete {o.kind} inet {table} {name}")
            continue
        if o is None:
            add_decl.append(f"add {n.kind} inet {table} {name} {{ {n.decl} }}")
            elem_add.extend(_element_cmd("add", table, name, n.elements))
            continue
        if o.decl != n.decl or o.kind != n.kind:
            return Delta((), True)
        ok, nk = _keyed(o), _keyed(n)
        gone = [e for k, e in ok.items() if nk.get(k) != e]
        came = [e for k, e in nk.items() if ok.get(k) != e]
        elem_del.extend(_element_cmd("delete", table, name, (_key(e) for e in gone)))
        elem_add.extend(_element_cmd("add", table, name, came))
    for name in sorted(chain_names):
        oc, nc = old.chains.get(name), new.chains.get(name)
        if (oc is not None and oc.shared) or (nc is not None and nc.shared):
            if nc is not None and oc is None and name not in present:
                add_decl.append(f"add chain inet {table} {name}")
                rewrite.extend(f"add rule inet {table} {name} {r}" for r in nc.rules)
            continue
        if oc == nc:
            continue
        if nc is None:
            if oc is not None:
                drop_chains.append(name)
            continue
        if oc is None:
            add_decl.append(f"add chain inet {table} {name}")
        elif oc.hook != nc.hook:
            return Delta((), True)
        else:
            rewrite.append(f"flush chain inet {table} {name}")
        rewrite.extend(f"add rule inet {table} {name} {r}" for r in nc.rules)
    cmds = [
        *add_decl,
        *rewrite,
        *elem_del,
        *elem_add,
        # Flush every chain that goes before deleting anything: rules jump to chains and
        # look up sets; then the sets (map elements jump to chains), then the chains.
        *(f"flush chain inet {table} {c}" for c in drop_chains),
        *drop_sets,
        *(f"delete chain inet {table} {c}" for c in drop_chains),
    ]
    return Delta(tuple(cmds), False)


def _key(element: str) -> str:
    return element.split(" : ", 1)[0]


def _keyed(s: NftSet) -> dict[str, str]:
    return {_key(e): e for e in s.elements}

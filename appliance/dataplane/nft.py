"""The nftables backend: one `inet` table of our own, changed in atomic transactions.

The first apply of a process loads the whole table in one transaction, unless the table
already carries the marker (a fingerprint of the services it was built from, kept as the
only element of the `generation` set) of exactly what we want, as after
`appliance apply` run twice or a daemon restart. Every later apply sends only the
difference for the services that changed, and updates the marker in the same
transaction. Established connections survive either way: conntrack keeps their NAT binding.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.config import DataplaneConfig
from appliance.dataplane import conntrack, libnft, sysctl
from appliance.dataplane.base import (
    ApplyReport,
    Connections,
    DataplaneError,
    ReadErrors,
    by_key,
    rs_label,
    run_tool,
    vs_label,
)
from appliance.dataplane.nftrules import (
    DEFAULT_SEED,
    DEFAULT_TABLE,
    Fragment,
    build,
    diff,
    digest,
    fragment,
    marker_cmds,
    marker_of,
    render_full,
)
from appliance.model import DesiredState, RealServer, VirtualService

Key = tuple[str, int, str]
log = logging.getLogger("appliance.dataplane")


@dataclass
class _Applied:
    """What we last put in the kernel, per service (our memory, not the kernel's word)."""

    services: dict[Key, VirtualService] = field(default_factory=dict)
    fragments: dict[Key, Fragment] = field(default_factory=dict)
    digests: dict[Key, int] = field(default_factory=dict)
    total: int = 0  # the sum of the digests, which the marker shows
    lb_chains: set[str] = field(default_factory=set)  # shared chains in the kernel
    marker: str | None = None


class NftablesBackend:
    name = "nftables"

    def __init__(
        self,
        config: DataplaneConfig | None = None,
        *,
        table: str = DEFAULT_TABLE,
        netns: str | None = None,
        seed: int = DEFAULT_SEED,
        check_sysctls: bool = True,
    ) -> None:
        self.config = config or DataplaneConfig()
        self.table = table
        self.netns = netns
        self.seed = seed
        self.check_sysctls = check_sysctls
        self._applied: _Applied | None = None
        self._checked: set[str] = set()
        self._connection_reads = ReadErrors("dataplane connections")
        self._truncation_logged = False
        self._lib: libnft.Nft | None = None

    # --- pure parts -------------------------------------------------------------------

    def script(self, desired: DesiredState) -> str:
        """The full transaction for `desired`, without the marker (stable for golden files)."""
        wanted = by_key(_sorted(desired.virtual_services))
        return render_full(build(fragment(vs, self.seed) for vs in wanted.values()), self.table)

    def render(self, desired: DesiredState) -> str:
        return self.script(desired)

    # --- the kernel -------------------------------------------------------------------

    async def _nft(self, script: str) -> None:
        err = b""
        if self.netns is None:
            if self._lib is None:
                self._lib = libnft.Nft()
            err = await self._lib.run(script)
        if self.netns is not None or err:
            # Another namespace (tests, `apply --netns`): the command inside it. A refusal:
            # it changed nothing, and the command names the failing line (the library does
            # not), so it words the error.
            rc, _, out = await run_tool(["nft", "-f", "-"], script.encode(), self.netns)
            err = (out or b"failed") if rc != 0 else b""
        if err:
            raise DataplaneError(f"nft refused the transaction: {_nft_error(err, script)}")

    async def _kernel_marker(self) -> str | None:
        rc, out, _ = await run_tool(
            ["nft", "-j", "list", "set", "inet", self.table, "generation"], None, self.netns
        )
        if rc != 0:
            return None
        for item in json.loads(out).get("nftables", []):
            elements = item.get("set", {}).get("elem", [])
            if len(elements) == 1 and isinstance(elements[0], str):
                return str(elements[0])
        return None

    async def _preflight(self, wanted: dict[Key, VirtualService]) -> None:
        if not self.check_sysctls:
            return
        families = {vs.family for vs in wanted.values()} | {"IPv4"}
        need = [n for f in sorted(families) for n in sysctl.FORWARDING[f] if n not in self._checked]
        if need:
            await sysctl.require(need, self.name, self.netns)
            self._checked.update(need)

    async def apply(self, desired: DesiredState) -> ApplyReport:
        t0 = time.perf_counter()
        wanted = by_key(desired.virtual_services)
        old = self._applied
        if old is not None and old.services == wanted:
            return ApplyReport(self.name, seconds=time.perf_counter() - t0)
        await self._preflight(wanted)
        touched, frags, digests, total = self._changed(wanted, old)
        marker = marker_of(total)
        added: list[str] = []
        changed: list[str] = []
        removed: list[str] = []
        stale: list[tuple[VirtualService, str]] = []  # UDP backends whose flows must go
        full = False
        calls = 0
        if old is None or old.marker is None:
            warnings = build(frags.values()).warnings
            if await self._kernel_marker() != marker:
                await self._load_full(wanted, frags, marker)
                full, calls = True, 1
                added = [vs_label(vs) for vs in wanted.values()]
        else:
            before = build(old.fragments[k] for k in touched if k in old.fragments)
            after = build(frags[k] for k in touched if k in frags)
            warnings = after.warnings
            delta = diff(before, after, self.table, old.lb_chains)
            if delta.needs_full:
                await self._load_full(wanted, frags, marker)
                full = True
            else:
                cmds = [*delta.commands, *marker_cmds(self.table, marker)]
                await self._nft("\n".join(cmds) + "\n")
            calls = 1
            added, changed, removed, stale = _changes(touched, old.services, wanted)
        if old is None or full:
            lb = {c.name for f in frags.values() for c in f.chains if c.shared}
        else:
            lb = old.lb_chains | {
                c.name for k in touched if k in frags for c in frags[k].chains if c.shared
            }
        self._applied = _Applied(dict(wanted), frags, digests, total, lb, marker)
        return ApplyReport(
            self.name,
            added=tuple(sorted(added)),
            changed=tuple(sorted(changed)),
            removed=tuple(sorted(removed)),
            warnings=(*warnings, *await self._forget(stale)),
            seconds=time.perf_counter() - t0,
            full_replace=full,
            kernel_calls=calls,
        )

    def _changed(
        self, wanted: dict[Key, VirtualService], old: _Applied | None
    ) -> tuple[list[Key], dict[Key, Fragment], dict[Key, int], int]:
        """The services that differ from what we applied, and every service's fragment
        and digest: identity first (plan() reuses unchanged values), equality second, so
        20,000 unchanged services cost little."""
        if old is None:
            frags = {k: fragment(vs, self.seed) for k, vs in wanted.items()}
            digests = {k: digest(f) for k, f in frags.items()}
            return list(wanted), frags, digests, sum(digests.values())
        get = old.services.get
        touched = [k for k, vs in wanted.items() if (o := get(k)) is not vs and o != vs]
        touched.extend(old.services.keys() - wanted.keys())
        frags, digests, total = dict(old.fragments), dict(old.digests), old.total
        for k in touched:
            if k in digests:
                total -= digests.pop(k)
                del frags[k]
            vs = wanted.get(k)
            if vs is not None:
                frags[k] = fragment(vs, self.seed)
                digests[k] = digest(frags[k])
                total += digests[k]
        return touched, frags, digests, total

    async def _forget(self, stale: list[tuple[VirtualService, str]]) -> list[str]:
        """Drop the conntrack entries of UDP flows to backends that left (TCP ends by
        itself); a failure is a warning, the rules are already in."""
        warn: list[str] = []
        for vs, address in stale:
            if vs.protocol == "UDP":
                try:
                    await conntrack.forget_udp(vs.vip, vs.port, address, self.netns)
                except DataplaneError as e:
                    warn.append(f"{rs_label(vs, address)}: {e}")
        return warn

    async def _load_full(
        self, wanted: dict[Key, VirtualService], frags: dict[Key, Fragment], marker: str
    ) -> None:
        """Replace our table in one transaction: first apply of a process, or a change
        only a reload expresses. Established flows keep their conntrack NAT binding."""
        ordered = (frags[vs.key] for vs in _sorted(wanted.values()))
        await self._nft(render_full(build(ordered), self.table, marker))

    def pending_drains(self) -> int:
        """Always 0: a removed node leaves the slot maps at once and its open connections
        live on in conntrack, so there is nothing to come back for."""
        return 0

    def close(self) -> None:
        if self._lib is not None:
            self._lib.close()
            self._lib = None

    async def connections(self) -> Connections:
        """Conntrack's word, per real server of every service we hold: the services from
        our last apply (or, before one, read back from our table), the counts from the
        kernel's conntrack table now. Every real server is listed, 0 when idle."""
        try:
            if self._applied is not None:
                services = list(self._applied.services.values())
            else:
                services = list(await self.current())
            found = await conntrack.count_active({vs.key for vs in services}, self.netns)
        except Exception as e:  # the page loses a column, the daemon goes on
            self._connection_reads.failed(e)
            return {}
        self._connection_reads.ok()
        if found.truncated and not self._truncation_logged:
            self._truncation_logged = True
            log.warning(
                "conntrack table past %d entries: active connections are a floor",
                found.lines,
                extra={"entries": found.lines},
            )
        out: dict[Key, dict[str, int]] = {}
        for vs in services:
            nodes = out.setdefault(vs.key, {})
            for rs in vs.real_servers:
                nodes[rs.address] = 0
        for (vip, port, protocol, node), n in found.counts.items():
            # a node that left keeps its open flows (graceful): it shows until they end
            out.setdefault((vip, port, protocol), {})[node] = n
        return out

    async def current(self) -> tuple[VirtualService, ...]:
        rc, out, err = await run_tool(
            ["nft", "-j", "list", "table", "inet", self.table], None, self.netns
        )
        if rc != 0:
            if b"No such file" in err:
                return ()
            raise DataplaneError(f"nft list table: {err.decode(errors='replace').strip()}")
        return read_back(json.loads(out))


def _nft_error(err: bytes, script: str) -> str:
    """nft's first complaint plus the command it was about (nft names it by line number)."""
    lines = err.decode(errors="replace").strip().splitlines()
    if not lines:
        return "no message"
    first = lines[0]
    parts = first.split(":")
    # `nft -f -` names the script /dev/stdin, libnftables <cmdline>
    if len(parts) > 2 and parts[0] in ("/dev/stdin", "<cmdline>") and parts[1].isdigit():
        commands = script.splitlines()
        n = int(parts[1])
        if 0 < n <= len(commands):
            first = f"{first.split('Error:', 1)[-1].strip()} in `{commands[n - 1][:200]}`"
    return first


def _sorted(services: Any) -> list[VirtualService]:
    return sorted(services, key=lambda vs: (vs.family, vs.vip, vs.protocol, vs.port))


def read_back(doc: dict[str, Any]) -> tuple[VirtualService, ...]:
    """Rebuild virtual services from `nft -j list table`: what the kernel really holds."""
    items: Sequence[dict[str, Any]] = doc.get("nftables", [])
    maps: dict[str, list[Any]] = {}
    set_timeout: dict[str, int] = {}
    rules: dict[str, list[list[dict[str, Any]]]] = {}
    for item in items:
        for kind in ("map", "set"):
            if kind in item:
                maps[item[kind]["name"]] = item[kind].get("elem", [])
                if "timeout" in item[kind]:
                    set_timeout[item[kind]["name"]] = int(item[kind]["timeout"])
        if "rule" in item:
            rules.setdefault(item["rule"]["chain"], []).append(item["rule"]["expr"])
    # shared slot maps: (map, vip, port) -> the values of its slots
    slots: dict[tuple[str, str, int], list[Any]] = {}
    for name, elements in maps.items():
        if name.startswith(("dst", "eps")):
            for key, value in elements:
                vip, port, _ = key["concat"]
                slots.setdefault((name, str(vip), int(port)), []).append(value)
    out: list[VirtualService] = []
    for vmap in ("vips4", "vips6"):
        for key, verdict in maps.get(vmap, []):
            vip, proto, port = key["concat"]
            weights: dict[str, int] = {}
            real_port = 0
            scheduler = "rr"
            timeout = 0
            target = (verdict.get("goto") or {}).get("target", "")  # or drop: no endpoints
            for expr in rules.get(target, []):
                for e in expr:
                    lookup = e.get("vmap") or (e.get("dnat") or {}).get("addr", {}).get("map")
                    if not isinstance(lookup, dict):
                        continue
                    scheduler = "sh" if "jhash" in json.dumps(lookup["key"]) else "wrr"
                    name = lookup["data"].lstrip("@")
                    for v in slots.get((name, str(vip), int(port)), []):
                        if "concat" in v:  # slot -> address . port
                            addr, real_port = v["concat"][0], int(v["concat"][1])
                            weights[addr] = weights.get(addr, 0) + 1
                            continue
                        for ep_expr in rules.get(v["goto"]["target"], []):  # affinity
                            for x in ep_expr:
                                if "dnat" in x:
                                    addr = x["dnat"]["addr"]
                                    real_port = int(x["dnat"].get("port", 0))
                                    weights[addr] = weights.get(addr, 0) + 1
                                if "set" in x:
                                    aff = x["set"]["set"].lstrip("@")
                                    timeout = set_timeout.get(aff, timeout)
            out.append(
                VirtualService(
                    vip=str(vip),
                    port=int(port),
                    protocol=str(proto).upper(),  # type: ignore[arg-type]
                    scheduler=scheduler,
                    real_port=real_port,
                    real_servers=tuple(
                        RealServer(node="", address=a, weight=w) for a, w in sorted(weights.items())
                    ),
                    service="",
                    persistence_timeout=timeout,
                )
            )
    return tuple(out)


def _changes(
    touched: list[Key], old: Mapping[Key, VirtualService], wanted: Mapping[Key, VirtualService]
) -> tuple[list[str], list[str], list[str], list[tuple[VirtualService, str]]]:
    """(added, changed, removed) labels, and the (service, backend) pairs that left."""
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    stale: list[tuple[VirtualService, str]] = []
    for k in touched:
        o, n = old.get(k), wanted.get(k)
        if o is None and n is not None:
            added.append(vs_label(n))
        elif n is None and o is not None:
            removed.append(vs_label(o))
            stale.extend((o, rs.address) for rs in o.real_servers)
        elif o is not None and n is not None:
            changed.append(vs_label(n))
            keep = {rs.address for rs in n.real_servers if rs.weight > 0}
            stale.extend((o, rs.address) for rs in o.real_servers if rs.address not in keep)
    return added, changed, removed, stale

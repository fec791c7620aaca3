"""The IPVS backend (pyroute2 generic netlink), by difference, never a flush.

It touches only services whose VIP lies in our pools. Edits use "set" (pyroute2's
"update" sends a delete) and always pass fwd_method (pyroute2's default is direct
routing); the bytes are ours (ipvsnl.py, checked against pyroute2's), sent pipelined.
A real server that leaves is drained: weight 0 first, deleted once it has no
active connections or after `drain_timeout`; call `apply()` again to finish drains (the
daemon does, every second while `pending_drains()` is above 0).

Netlink calls are blocking; they run on one worker thread, which also holds the network
namespace when one is given (setns is per thread).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPVS, IPVSService  # type: ignore[import-untyped,unused-ignore]
from pyroute2 import netns as pnetns  # type: ignore[import-untyped,unused-ignore]

from appliance.address import host_port
from appliance.config import DataplaneConfig
from appliance.dataplane import conntrack, ipvsnl, sysctl
from appliance.dataplane.base import (
    ApplyReport,
    Connections,
    DataplaneError,
    Ownership,
    ReadErrors,
    by_key,
    rs_label,
    run_tool,
    vs_label,
)
from appliance.dataplane.ipvsrules import (
    FWD_METHOD,
    HELPER_SETS,
    IP_VS_SVC_F_PERSISTENT,
    IpvsDest,
    IpvsService,
    entries,
    helper_delta,
    helper_elements,
    helper_of,
    helper_script,
    restore_script,
)
from appliance.model import DesiredState, RealServer, VirtualService

Key = tuple[str, int, str]
PROTO_NUM = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTO_NAME = {v: k for k, v in PROTO_NUM.items()}
FWD_NAME = {v: k for k, v in FWD_METHOD.items()}
HELPER_TABLE = "appliance_ipvs"
log = logging.getLogger("appliance.dataplane")


@dataclass
class KernelService:
    svc: IpvsService
    dests: dict[str, IpvsDest] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)  # ActiveConns at the last read


def _attr(nla: Any, name: str) -> Any:
    value = nla.get(name)
    return value if value is not None else nla.get(name.rsplit("_ATTR_", 1)[-1].lower())


class IpvsBackend:
    name = "ipvs"

    def __init__(
        self,
        config: DataplaneConfig | None = None,
        ownership: Ownership | None = None,
        *,
        netns: str | None = None,
        check_sysctls: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or DataplaneConfig(backend="ipvs")
        self.ownership = ownership or Ownership()
        self.netns = netns
        self.check_sysctls = check_sysctls
        self.clock = clock
        self._pool = ThreadPoolExecutor(1, "ipvs", initializer=self._enter, initargs=(netns,))
        self._sock: Any = None  # pyroute2, for dumps
        # connections() dumps on a thread and socket of its own: a long dump of thousands
        # of services never holds up an apply waiting on the worker.
        self._reader: ThreadPoolExecutor | None = None
        self._rsock: Any = None
        self._nl: ipvsnl.IpvsLink | None = None  # ours, for changes
        self._kernel: dict[Key, KernelService] | None = None
        self._last: dict[Key, VirtualService] | None = None  # what the last pass made true
        self._owned: dict[str, bool] = {}
        self._draining: dict[tuple[Key, str], float] = {}  # -> deadline
        self._helper: dict[Key, tuple[tuple[str, str], ...]] | None = None
        self._helper_calls = 0
        self._todo: list[Key] = []  # the services the last pass looked at
        self._connection_reads = ReadErrors("dataplane connections")
        self._checked: set[str] = set()

    # --- the worker thread ------------------------------------------------------------

    @staticmethod
    def _enter(netns: str | None) -> None:
        if netns:
            pnetns.setns(netns)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    @staticmethod
    def _open_ipvs() -> Any:
        try:
            return IPVS()
        except Exception as e:  # the family is missing: ip_vs not loaded
            raise DataplaneError(f"IPVS netlink unavailable (modprobe ip_vs?): {e}") from e

    def _ipvs(self) -> Any:
        if self._sock is None:
            self._sock = self._open_ipvs()
        return self._sock

    def _reader_ipvs(self) -> Any:
        if self._rsock is None:
            self._rsock = self._open_ipvs()
        return self._rsock

    def _svc_msg(self, svc: IpvsService) -> Any:
        six = ":" in svc.vip
        return IPVSService(
            addr=svc.vip,
            port=svc.port,
            protocol=PROTO_NUM[svc.protocol],
            sched_name=svc.scheduler,
            timeout=svc.persistence,
            flags={
                "flags": IP_VS_SVC_F_PERSISTENT if svc.persistence else 0,
                "mask": 0xFFFFFFFF,
            },
            # The kernel reads the netmask as a host-order u32: a prefix length for IPv6.
            netmask="128.0.0.0" if six else "255.255.255.255",
        )

    def _read(self, ipvs: Any = None) -> dict[Key, KernelService]:
        """Every IPVS service with a VIP in our pools, with its destinations."""
        ipvs = ipvs if ipvs is not None else self._ipvs()
        out: dict[Key, KernelService] = {}
        for msg in ipvs.service("dump"):
            s = msg.get("IPVS_CMD_ATTR_SERVICE")
            vip = _attr(s, "IPVS_SVC_ATTR_ADDR")
            if vip is None or not self.ownership.owns(vip):
                continue
            flags = _attr(s, "IPVS_SVC_ATTR_FLAGS") or {}
            persistent = bool(flags.get("flags", 0) & IP_VS_SVC_F_PERSISTENT)
            svc = IpvsService(
                vip=vip,
                port=int(_attr(s, "IPVS_SVC_ATTR_PORT")),
                protocol=PROTO_NAME.get(int(_attr(s, "IPVS_SVC_ATTR_PROTOCOL")), "TCP"),
                scheduler=str(_attr(s, "IPVS_SVC_ATTR_SCHED_NAME")),
                persistence=int(_attr(s, "IPVS_SVC_ATTR_TIMEOUT") or 0) if persistent else 0,
            )
            out[svc.key] = self._read_dests(KernelService(svc), ipvs)
        return out

    def _read_dests(self, ks: KernelService, ipvs: Any = None) -> KernelService:
        ks.dests.clear()
        ks.active.clear()
        for msg in (ipvs if ipvs is not None else self._ipvs()).dest(
            "dump", service=self._svc_msg(ks.svc)
        ):
            d = msg.get("IPVS_CMD_ATTR_DEST")
            addr = _attr(d, "IPVS_DEST_ATTR_ADDR")
            ks.dests[addr] = IpvsDest(
                address=addr,
                port=int(_attr(d, "IPVS_DEST_ATTR_PORT")),
                weight=int(_attr(d, "IPVS_DEST_ATTR_WEIGHT")),
                fwd=FWD_NAME.get(int(_attr(d, "IPVS_DEST_ATTR_FWD_METHOD")) & 0x7, "masq"),
            )
            ks.active[addr] = int(_attr(d, "IPVS_DEST_ATTR_ACTIVE_CONNS") or 0)
        return ks

    def _sync(self, wanted: dict[Key, VirtualService]) -> dict[str, list[str]]:
        """One pass of the difference; runs on the worker thread. Only services that
        changed since the last pass (or still drain) are looked at: the kernel is read
        once, at the first pass, then our record of it is kept in step. Changes go out
        in pipelined batches (ipvsnl); any refusal makes the next pass re-read."""
        kernel, keys = self._keys_to_look_at(wanted)
        ops: list[ipvsnl.Op] = []
        did: dict[str, list[str]] = {
            "added": [],
            "changed": [],
            "removed": [],
            "draining": [],
            "gone": [],
            "calls": [],
        }
        todo: list[Key] = sorted(keys)
        now = self.clock()
        for key in todo:
            vs = wanted.get(key)
            if vs is not None:
                self._sync_service(kernel, key, vs, now, ops, did)
        for key in [k for k in keys if k in kernel and k not in wanted]:
            ks = kernel.pop(key)
            ops.append(ipvsnl.del_service(ks.svc))
            vip, port, proto = key
            did["removed"].append(f"{proto.lower()} {host_port(vip, port)}")
            did["gone"].extend(f"{proto}|{vip}|{port}|{a}" for a in ks.dests)
            for a in ks.dests:
                self._draining.pop((key, a), None)
        if ops:
            failed = self._link().run(ops)
            did["calls"].extend("" for _ in ops)
            if failed:
                raise DataplaneError(ipvsnl.describe(failed))
        self._last = dict(wanted)
        self._todo = todo
        return did

    def _keys_to_look_at(
        self, wanted: dict[Key, VirtualService]
    ) -> tuple[dict[Key, KernelService], set[Key]]:
        """Our record of the kernel, and the services to look at: every one at the first
        pass (reading the kernel), then those that changed, went away or still drain."""
        if self._kernel is None or self._last is None:
            self._kernel = self._read()
            return self._kernel, set(wanted) | set(self._kernel)
        last = self._last
        get = last.get
        keys = {k for k, vs in wanted.items() if (o := get(k)) is not vs and o != vs}
        keys.update(last.keys() - wanted.keys())
        keys.update(k for k, _ in self._draining)
        return self._kernel, keys

    def _sync_service(
        self,
        kernel: dict[Key, KernelService],
        key: Key,
        vs: VirtualService,
        now: float,
        ops: list[ipvsnl.Op],
        did: dict[str, list[str]],
    ) -> None:
        """The service and its destinations as `vs` says; those it no longer lists drain."""
        svc, dests = entries(vs)
        ks = kernel.get(key)
        if ks is None:
            ops.append(ipvsnl.add_service(svc))
            ks = kernel[key] = KernelService(svc)
            did["added"].append(vs_label(vs))
        elif ks.svc != svc:
            ops.append(ipvsnl.set_service(svc))
            ks.svc = svc
            did["changed"].append(vs_label(vs))
        touched = False
        for addr, dest in dests.items():
            have = ks.dests.get(addr)
            self._draining.pop((key, addr), None)
            if have == dest:
                continue
            if have is None:
                ops.append(ipvsnl.add_dest(svc, dest))
            elif have.port != dest.port:  # the port is part of the key: replace
                ops.append(ipvsnl.del_dest(svc, have))
                ops.append(ipvsnl.add_dest(svc, dest))
            else:
                ops.append(ipvsnl.set_dest(svc, dest))
            ks.dests[addr] = dest
            touched = True
        leaving = [a for a in ks.dests if a not in dests]
        if self._drain(key, vs, ks, leaving, now, ops, did):
            touched = True
        if touched and vs_label(vs) not in did["added"] + did["changed"]:
            did["changed"].append(vs_label(vs))

    def _drain(
        self,
        key: Key,
        vs: VirtualService,
        ks: KernelService,
        leaving: list[str],
        now: float,
        ops: list[ipvsnl.Op],
        did: dict[str, list[str]],
    ) -> bool:
        """Weight 0 first, then gone once idle or past drain_timeout. True: a change."""
        touched = False
        if any(ks.dests[a].weight == 0 and (key, a) in self._draining for a in leaving):
            self._read_dests(ks)  # fresh ActiveConns for the drain decision
            did["calls"].append("")
        for addr in leaving:
            have = ks.dests[addr]
            label = rs_label(vs, addr)
            deadline = self._draining.get((key, addr))
            if have.weight != 0 or deadline is None:
                if have.weight != 0:
                    drained = IpvsDest(have.address, have.port, 0, have.fwd)
                    ops.append(ipvsnl.set_dest(ks.svc, drained))
                    ks.dests[addr] = drained
                self._draining[(key, addr)] = now + self.config.drain_timeout
                did["draining"].append(label)
                touched = True
            elif ks.active.get(addr, 0) == 0 or now >= deadline:
                ops.append(ipvsnl.del_dest(ks.svc, have))
                del ks.dests[addr]
                self._draining.pop((key, addr), None)
                did["gone"].append(f"{vs.protocol}|{vs.vip}|{vs.port}|{addr}")
                touched = True
            else:
                did["draining"].append(label)
        return touched

    def _link(self) -> ipvsnl.IpvsLink:
        if self._nl is None:
            try:
                self._nl = ipvsnl.IpvsLink()
            except OSError as e:
                raise DataplaneError(f"IPVS netlink unavailable (modprobe ip_vs?): {e}") from e
        return self._nl

    # --- the interface ----------------------------------------------------------------

    def _owns(self, vip: str) -> bool:
        owned = self._owned.get(vip)
        if owned is None:
            owned = self._owned[vip] = self.ownership.owns(vip)
        return owned

    def render(self, desired: DesiredState) -> str:
        return restore_script(desired.virtual_services)

    async def _preflight(self, wanted: dict[Key, VirtualService]) -> None:
        if not self.check_sysctls:
            return
        need = [*sysctl.FORWARDING["IPv4"], *sysctl.IPVS]
        if any(vs.family == "IPv6" for vs in wanted.values()):
            need.extend(sysctl.FORWARDING["IPv6"])
        need = [n for n in need if n not in self._checked]
        if need:
            await sysctl.require(need, self.name, self.netns)
            self._checked.update(need)

    async def apply(self, desired: DesiredState) -> ApplyReport:
        t0 = time.perf_counter()
        everything = by_key(desired.virtual_services)
        wanted = {k: vs for k, vs in everything.items() if self._owns(vs.vip)}
        warnings = [
            f"{vs.service} {vs_label(vs)}: VIP outside our pools, not programmed"
            for k, vs in everything.items()
            if k not in wanted
        ]
        if wanted == self._last and not self._draining:
            return ApplyReport(
                self.name, warnings=tuple(warnings), seconds=time.perf_counter() - t0
            )
        await self._preflight(wanted)
        try:
            did = await self._call(self._sync, wanted)
        except DataplaneError:
            self._kernel = self._last = None  # we no longer know: re-read next time
            raise
        except Exception as e:  # netlink said no: one line, and re-read next time
            self._kernel = self._last = None
            raise DataplaneError(f"IPVS refused a change: {e}") from e
        await self._sync_helper(wanted, self._todo)
        if self._helper_calls:
            did["calls"].append("")
        for gone in did["gone"]:
            proto, vip, port, addr = gone.split("|")
            if proto == "UDP":
                try:
                    await conntrack.forget_udp(vip, int(port), addr, self.netns)
                except DataplaneError as e:
                    warnings.append(f"udp {vip}:{port} -> {addr}: {e}")
        return ApplyReport(
            self.name,
            added=tuple(sorted(did["added"])),
            changed=tuple(sorted(did["changed"])),
            removed=tuple(sorted(did["removed"])),
            draining=tuple(sorted(did["draining"])),
            warnings=tuple(warnings),
            seconds=time.perf_counter() - t0,
            kernel_calls=len(did["calls"]),
        )

    async def _sync_helper(self, wanted: dict[Key, VirtualService], touched: list[Key]) -> None:
        """Keep the nftables helper table (nat marks, source ranges) in step: loaded whole
        the first time, then element updates for the services that changed."""
        self._helper_calls = 0
        if self._helper is None:
            self._helper = {k: helper_of(vs) for k, vs in wanted.items()}
            script = helper_script(helper_elements(wanted.values()), HELPER_TABLE)
        else:
            old: dict[str, set[str]] = {name: set() for name in HELPER_SETS}
            new: dict[str, set[str]] = {name: set() for name in HELPER_SETS}
            for k in touched:
                for name, element in self._helper.pop(k, ()):
                    old[name].add(element)
                if k in wanted:
                    self._helper[k] = helper_of(wanted[k])
                    for name, element in self._helper[k]:
                        new[name].add(element)
            before = {n: frozenset(e) for n, e in old.items()}
            after = {n: frozenset(e) for n, e in new.items()}
            cmds = helper_delta(before, after, HELPER_TABLE)
            if not cmds:
                return
            script = "\n".join(cmds) + "\n"
        rc, _, err = await run_tool(["nft", "-f", "-"], script.encode(), self.netns)
        self._helper_calls = 1
        if rc != 0:
            self._helper = None  # reload it whole next time
            raise DataplaneError(f"nft (IPVS helper table): {err.decode().strip()}")

    async def current(self) -> tuple[VirtualService, ...]:
        kernel = await self._call(self._read)
        out: list[VirtualService] = []
        for ks in kernel.values():
            ports = {d.port for d in ks.dests.values()}
            fwd = {d.fwd for d in ks.dests.values()}
            out.append(
                VirtualService(
                    vip=ks.svc.vip,
                    port=ks.svc.port,
                    protocol=ks.svc.protocol,
                    scheduler=ks.svc.scheduler,
                    real_port=min(ports) if ports else 0,
                    real_servers=tuple(
                        RealServer("", a, d.weight) for a, d in sorted(ks.dests.items())
                    ),
                    service="",
                    forwarding={"droute": "dr", "tunnel": "tun"}.get(
                        next(iter(fwd)) if fwd else "masq", "nat"
                    ),  # type: ignore[arg-type]
                    persistence_timeout=ks.svc.persistence,
                )
            )
        return tuple(out)

    async def connections(self) -> Connections:
        """The destinations' ActiveConns (what `ipvsadm -Ln` shows), dumped now from the
        kernel for every service in our pools; our record of the kernel is not touched."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(
                1, "ipvs-read", initializer=self._enter, initargs=(self.netns,)
            )
        loop = asyncio.get_running_loop()
        try:
            kernel = await loop.run_in_executor(
                self._reader, lambda: self._read(self._reader_ipvs())
            )
        except Exception as e:  # the page loses a column, the daemon goes on
            self._connection_reads.failed(e)
            return {}
        self._connection_reads.ok()
        return {key: dict(ks.active) for key, ks in kernel.items()}

    def pending_drains(self) -> int:
        """Real servers at weight 0 still waiting: the daemon re-applies while this > 0."""
        return len(self._draining)

    def close(self) -> None:
        for sock in (self._sock, self._nl):
            if sock is not None:
                self._pool.submit(sock.close).result()
        self._pool.shutdown()
        if self._reader is not None:
            if self._rsock is not None:
                self._reader.submit(self._rsock.close).result()
            self._reader.shutdown()

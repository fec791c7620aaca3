"""The daemon's side of the VRRP process: the speaker part of the loop (start, set_vips,
status, stop, on_change) kept by a child process (appliance.ha.child) over a pipe.

The daemon classifies the plan's VIPs into instance groups and sends only what changed;
the child sends back its state when it changes and twice a second. If the child dies it
is started again (its first act is to clear what it left on the interface); the page
shows the instance in fault until it is back, and counts the restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from appliance.address import PoolRanges, version_of
from appliance.config import HaConfig, Pool, VrrpInstance
from appliance.dataplane.base import DataplaneError, run_tool
from appliance.ha import channel, firewall
from appliance.ha.announce import release_strays
from appliance.ha.status import HaStatus, InstanceStatus
from appliance.model import Vip

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds for the child to open its sockets (link-local DAD included)
STOP_TIMEOUT = 2.0
RESTART_DELAY = 1.0


class SpeakerError(OSError):
    """The VRRP process could not start (its own message says why)."""


def _parse(address: str) -> tuple[int, int, str]:
    """(family, integer for address order, one spelling)."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip), str(ip)


class SpeakerProcess:
    """Every VRRP instance of one interface, spoken by a process of its own."""

    def __init__(
        self,
        ha: HaConfig,
        *,
        pools: Sequence[Pool] = (),
        on_change: Callable[[InstanceStatus], None] | None = None,
        wait_for_plan: bool = False,
        argv: Sequence[str] | None = None,
    ) -> None:
        if ha.interface is None:
            raise ValueError("ha.interface is not set: there is nothing to speak VRRP on")
        self.ha = ha
        self.interface = ha.interface
        self.pools = tuple(pools)
        self._ours = PoolRanges.of(self.pools).holds
        self.on_change = on_change
        self.argv = tuple(argv or (sys.executable, "-m", "appliance.ha.child"))
        self.restarts = 0
        self._planned = not wait_for_plan
        self._wait_for_plan = wait_for_plan
        # What the child has been told, per instance, in address order.
        self._groups: dict[str, tuple[str, ...]] = {i.name: () for i in ha.instances}
        self._keys: dict[str, tuple[int, int, str]] = {}  # address -> _parse(), parsed once
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reported: dict[str, channel.Reported] = {}
        self._dropped: dict[str, int] = {}
        self._garps = 0
        self._failing: dict[str, str] = {}  # what the daemon told the child is failing
        self._held: dict[str, str] = {}  # the instances the operator holds in Fault
        self._child_failing: dict[str, str] = {}  # every failing cause, as the child said
        self._holding: dict[str, tuple[str, ...]] = {}  # cache, per report
        self._stopping = False
        self._exit: str | None = None  # why the child is not running, for the page
        self._exit_at = time.time()

    # -- SpeakerPart ------------------------------------------------------------------
    async def start(self) -> None:
        await self._install_filter()
        await self._spawn()

    async def _install_filter(self) -> None:
        """The outer wall of `peers` (appliance.ha.firewall): protocol 112 on ha.interface
        only from the peers, in a table of our own. Loaded at every start, so the kernel
        has the config's peers; a failure is one warning (the speaker's own check stays)."""
        script = firewall.render(self.ha)
        if firewall.RULE_MARK not in script:
            # Each family has an instance that takes adverts from anyone: no filter, and
            # none left from an earlier config that had peers.
            with contextlib.suppress(DataplaneError):
                await run_tool(["nft", "delete", "table", "inet", firewall.TABLE])
            return
        try:
            rc, _, err = await run_tool(["nft", "-f", "-"], script.encode())
        except DataplaneError as e:
            rc, err = 1, str(e).encode()
        if rc:
            error = err.decode(errors="replace").strip()
            log.warning(
                "%s: VRRP peers filter not loaded (table inet %s): %s",
                self.interface, firewall.TABLE, error,
                extra={"interface": self.interface, "table": firewall.TABLE, "error": error},
            )  # fmt: skip
        else:
            log.info("%s: VRRP accepted only from the peers (table inet %s)", self.interface,
                     firewall.TABLE,
                     extra={"interface": self.interface, "table": firewall.TABLE})  # fmt: skip

    def set_vips(self, vips: Iterable[Vip], *, planned: bool = True) -> None:
        deltas: dict[str, tuple[list[str], list[str]]] = {}
        wanted = self._classify(vips)
        for name, group in wanted.items():
            old = self._groups.get(name, ())
            if group == old:
                continue
            old_set, new_set = set(old), set(group)
            deltas[name] = (
                [v for v in group if v not in old_set],
                [v for v in old if v not in new_set],
            )
            self._groups[name] = group
            self._holding.pop(name, None)
        first_plan = planned and not self._planned
        if planned:
            self._planned = True
        if deltas or first_plan:
            self._send_deltas(deltas, planned=self._planned)

    def track(self, failing: Mapping[str, str]) -> None:
        """The daemon's tracked causes failing now (cause -> what is wrong)."""
        if dict(failing) != self._failing:
            self._failing = dict(failing)
            self._write({"op": "track", "failing": self._failing})

    def hold(self, instances: Mapping[str, str]) -> None:
        """Instances the operator holds in Fault (instance -> why)."""
        if dict(instances) != self._held:
            self._held = dict(instances)
            self._write({"op": "hold", "instances": self._held})

    def status(self) -> HaStatus:
        instances = []
        for config in self.ha.instances:
            group = self._groups.get(config.name, ())
            got = self._reported.get(config.name)
            if got is None or self._exit is not None:
                instances.append(self._not_running(config, group))
                continue
            holding = self._holding.get(config.name)
            if holding is None:
                holding = self._holding[config.name] = got.holding(group)
            instances.append(
                replace(
                    got.status,
                    vips=group,
                    holding=holding,
                    restarts=self.restarts,
                    configured_priority=config.priority,
                )
            )
        failing = self._child_failing if self._exit is None else self._failing
        return HaStatus(
            self.interface, tuple(instances), dict(self._dropped), self._garps, dict(failing)
        )

    async def stop(self) -> None:
        """The child resigns (priority 0) and removes its VIPs, then exits."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._write({"op": "stop"})
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("%s: the VRRP process did not stop in time: killed", self.interface,
                        extra={"interface": self.interface, "pid": proc.pid})  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 1.0)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- internals --------------------------------------------------------------------
    async def _spawn(self) -> None:
        env = dict(os.environ)
        env.setdefault("APPLIANCE_LOG_LEVEL", logging.getLevelName(logging.getLogger().level))
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the daemon's: one journal
            limit=channel.LINE_LIMIT,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._proc, self._exit = proc, None
        proc.stdin.write(
            channel.encode(channel.start_message(self.ha, self.pools, self._wait_for_plan))
        )
        try:
            first = await asyncio.wait_for(self._until_started(proc.stdout), START_TIMEOUT)
        except (TimeoutError, channel.ChannelError) as e:
            first = {"op": "error", "message": f"no answer: {e!r}"}
        if first.get("op") != "started":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            rc = await proc.wait()
            self._exit, self._exit_at = f"the VRRP process failed to start ({rc})", time.time()
            raise SpeakerError(
                f"VRRP on {self.interface}: {first.get('message', first)} (exit {rc})"
            )
        log.info("%s: VRRP process %d started", self.interface, proc.pid,
                 extra={"interface": self.interface, "pid": proc.pid})  # fmt: skip
        # Everything told so far (a restart: the whole groups), and the plan if we had one.
        if self._failing:
            self._write({"op": "track", "failing": self._failing})
        if self._held:
            self._write({"op": "hold", "instances": self._held})
        told: dict[str, tuple[list[str], list[str]]] = {
            name: (list(group), []) for name, group in self._groups.items() if group
        }
        if told or (self._planned and self._wait_for_plan):
            self._send_deltas(told, planned=self._planned)
        self._reader = asyncio.create_task(self._read(proc))

    async def _until_started(self, stdout: asyncio.StreamReader) -> dict[str, Any]:
        """The child's first answer, started or error; its first transitions come before."""
        while True:
            line = await stdout.readline()
            if not line:
                return {"op": "error", "message": "exited before it started"}
            message = channel.decode(line)
            if message["op"] == "status":
                self._take(message)
            else:
                return message

    def _classify(self, vips: Iterable[Vip]) -> dict[str, tuple[str, ...]]:
        """status.instance_vips for every instance at once, each address parsed once."""
        keys = self._keys
        found: dict[str, set[tuple[int, str]]] = {i.name: set() for i in self.ha.instances}
        wanted_families = [(i, version_of(i.family)) for i in self.ha.instances]
        seen: set[str] = set()
        for vip in vips:
            key = keys.get(vip.address)
            if key is None:
                key = keys[vip.address] = _parse(vip.address)
            seen.add(vip.address)
            for instance, family in wanted_families:
                if key[0] == family and _owns(instance, vip.pool):
                    found[instance.name].add((key[1], key[2]))
        if len(keys) > 2 * len(seen) + 1024:  # forget addresses long gone
            self._keys = {a: k for a, k in keys.items() if a in seen}
        return {name: tuple(a for _, a in sorted(pairs)) for name, pairs in found.items()}

    def _send_deltas(
        self, deltas: dict[str, tuple[list[str], list[str]]], *, planned: bool
    ) -> None:
        for message in channel.vips_messages(deltas, planned):
            self._write(message)

    def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # the restart sends the whole groups
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(channel.encode(message))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                message = channel.decode(line)
                if message["op"] == "status":
                    self._take(message)
            except channel.ChannelError as e:
                log.error("%s: VRRP process: message refused: %s", self.interface, e,
                          extra={"interface": self.interface, "error": str(e)})  # fmt: skip
        rc = await proc.wait()
        if self._stopping:
            return
        self._exit, self._exit_at = f"the VRRP process exited ({rc})", time.time()
        log.error("%s: %s; starting it again", self.interface, self._exit,
                  extra={"interface": self.interface, "pid": proc.pid, "rc": rc})  # fmt: skip
        self._reported.clear()
        self._notify_all()
        # Nobody speaks for the VIPs it held: stop answering ARP for them now, not after
        # the restart (a peer takes over after its Master_Down_Interval).
        try:
            for vip in await release_strays(self.interface, self._ours):
                log.warning(
                    "%s: removed %s (the VRRP process died holding it)", self.interface, vip,
                    extra={"interface": self.interface, "vip": vip},
                )  # fmt: skip
        except Exception as e:
            log.error("%s: removing the VIPs of the dead VRRP process: %s", self.interface, e,
                      extra={"interface": self.interface, "error": str(e)})  # fmt: skip
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY)
            if self._stopping:
                return
            try:
                await self._spawn()
                self.restarts += 1
                return
            except (OSError, SpeakerError) as e:
                log.error("%s: VRRP process: %s", self.interface, e,
                          extra={"interface": self.interface, "error": str(e)})  # fmt: skip

    def _take(self, message: dict[str, Any]) -> None:
        got = channel.read_status(message)
        self._dropped, self._garps, self._child_failing = got.dropped, got.garps_sent, got.failing
        for r in got.instances:
            self._reported[r.status.name] = r
        self._holding.clear()
        transition = message.get("transition")
        if transition and self.on_change is not None:
            for s in self.status().instances:
                if s.name == transition:
                    self.on_change(s)

    def _notify_all(self) -> None:
        if self.on_change is not None:
            for s in self.status().instances:
                self.on_change(s)

    def _not_running(self, config: VrrpInstance, group: tuple[str, ...]) -> InstanceStatus:
        return InstanceStatus(
            name=config.name,
            vrid=config.vrid,
            family=config.family,
            state="fault" if self._exit else "initialize",
            since=self._exit_at,
            reason=self._exit or "starting",
            master=None,
            priority=config.priority,
            advert_interval=config.advert_interval,
            adverts_in=0,
            adverts_out=0,
            dropped={},
            vips=group,
            holding=(),
            peers=config.accepted_peers,
            restarts=self.restarts,
            configured_priority=config.priority,
        )


def _owns(instance: VrrpInstance, pool: str) -> bool:
    return not instance.pools or pool in instance.pools

"""The VRRPv3 speaker: raw IP sockets (protocol 112) and asyncio timers around the pure
codec (`vrrp`) and state machine (`virtual_router`), driving the announcer.

One speaker per interface runs every configured instance (VRID) on it. The daemon calls:

    speaker = Speaker(config.ha, pools=config.pools)
    await speaker.start()
    speaker.set_vips(desired.vips)      # every time the plan changes; cheap when unchanged
    speaker.status()                    # for the status page
    await speaker.stop()                # priority 0, VIPs removed

The daemon runs it in a process of its own (`appliance.ha.child`), fed VIP deltas by
`update()`, so that no planning, zone rebuild or dataplane diff can delay an advert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped,unused-ignore]

from appliance.address import PoolRanges, version_of
from appliance.config import HaConfig, Pool, VrrpInstance
from appliance.ha import vrrp
from appliance.ha.announce import Announcer, release_strays
from appliance.ha.group import VipGroup
from appliance.ha.instance import Instance
from appliance.ha.link import LinkInfo, down_reason, lookup
from appliance.ha.sockets import VrrpSockets
from appliance.ha.status import HaStatus, InstanceStatus, instance_vips
from appliance.ha.track import effective
from appliance.ha.virtual_router import (
    LINK_DOWN,
    Action,
    Announce,
    RouterSettings,
    Send,
    Transition,
    VirtualRouter,
)
from appliance.ha.vmac import Vmac
from appliance.model import Vip

log = logging.getLogger(__name__)

LINK_POLL = 0.05  # seconds between interface state checks (Fault detection)
LINK_LOCAL_WAIT_STEPS = 100  # x LINK_POLL: how long start() waits for an IPv6 link-local
# Until the first plan: the lowest priority there is, so a peer that holds VIPs keeps them
# (keepalived users set vrrp_startup_delay for this). Alone on the LAN we still become
# master, holding nothing until the plan says what.
PLANLESS_PRIORITY = 1


class Speaker:
    """Every VRRP instance of one interface. Use from one asyncio loop."""

    def __init__(
        self,
        ha: HaConfig,
        *,
        pools: Sequence[Pool] = (),
        announcer: Announcer | None = None,
        on_change: Callable[[InstanceStatus], None] | None = None,
        wait_for_plan: bool = False,
    ) -> None:
        if ha.interface is None:
            raise ValueError("ha.interface is not set: there is nothing to speak VRRP on")
        self.ha = ha
        self.interface = ha.interface
        self.pools = tuple(pools)
        self.announcer = announcer or self._announcer(ha.interface)
        self.on_change = on_change
        self.dropped: Counter[str] = Counter()
        self._instances: list[Instance] = []
        self._channels: dict[int, VrrpSockets] = {}
        self._ipr: AsyncIPRoute | None = None
        self._link: LinkInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._all_vips: tuple[Vip, ...] | None = None  # set_vips() before start()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The daemon's first set_vips() is its first plan; until then, PLANLESS_PRIORITY.
        self._waiting_for_plan = wait_for_plan
        self._weights = ha.track.weights()
        self._failing: dict[str, str] = {}  # the daemon's causes (dataplane, source)
        self._interfaces_failing: dict[str, str] = {}  # the tracked interfaces', ours
        self._link_up = True
        self._held: dict[str, str] = {}  # instance -> why the operator holds it in Fault

    # -- the daemon's API -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ipr = AsyncIPRoute()

        ours = PoolRanges.of(self.pools).holds

        # A VIP left behind by a killed run must not become our primary address.
        link = await lookup(self._ipr, self.interface, skip=ours)
        wants_v6 = any(i.family == "IPv6" for i in self.ha.instances)
        for _ in range(LINK_LOCAL_WAIT_STEPS):
            if link.ipv6_link_local is not None or not wants_v6 or not link.up:
                break
            # Right after boot the link-local address may still be in DAD (about a second).
            await asyncio.sleep(LINK_POLL)
            link = await lookup(self._ipr, self.interface, skip=ours)
        self._link = link
        self._link_up = link.up
        for t in self.ha.track.interfaces:
            why = down_reason(t.name)
            if why is not None:
                self._interfaces_failing[f"interface {t.name}"] = why
        # Nothing is held yet: a VIP on the interface is a killed run's (or someone's) leftover.
        for vip in await release_strays(self.interface, ours):
            log.warning(
                "%s: removed %s, a VIP this host does not hold (yet)", self.interface, vip,
                extra={"interface": self.interface, "vip": vip},
            )  # fmt: skip
        await self.announcer.start()
        for family in sorted({version_of(i.family) for i in self.ha.instances}):
            channel = VrrpSockets(family, link)
            self._channels[family] = channel
            self._loop.add_reader(channel.recv.fileno(), self._readable, channel)
        now = self._loop.time()
        for config in self.ha.instances:
            family = version_of(config.family)
            priority, fault = self._wanted(config)
            settings = RouterSettings(
                vrid=config.vrid,
                priority=priority,
                interval_cs=vrrp.interval_cs(config.advert_interval),
                address=self._channels[family].source or "",
                preempt=config.preempt,
                preempt_delay=config.preempt_delay,
            )
            if settings.address in config.accepted_peers:
                raise ValueError(
                    f"ha instance {config.name}: peer {settings.address} is this host's own"
                    f" address on {self.interface}"
                )
            inst = Instance(config, VirtualRouter(settings), self.announcer, self.interface)
            inst.router.fault = fault
            self._instances.append(inst)
            if config.use_vmac:
                await self._make_vmac(inst)
        if self._all_vips is not None:
            self._assign(self._all_vips)
        for inst in self._instances:
            self._apply(inst, inst.router.start(now))
        self._monitor = asyncio.create_task(self._watch_link())

    def set_vips(self, vips: Iterable[Vip], *, planned: bool = True) -> None:
        """The VIPs the plan wants announced; each instance takes its group. The first
        planned call is the plan the speaker waited for: the configured priorities apply
        from then on. `planned=False`: VIPs from a saved plan, served at the planless
        priority (a peer with a live plan keeps them)."""
        self._assign(vips)
        if planned:
            self.planned()

    def update(self, instance: str, added: Iterable[str], removed: Iterable[str]) -> None:
        """A delta to one instance's group, as the daemon's process sends it: no
        classification and no copy of the whole group."""
        inst = next((i for i in self._instances if i.config.name == instance), None)
        if inst is None:
            raise KeyError(f"no VRRP instance {instance!r}")
        self._changed(inst, *inst.vips.update(added, removed))

    def planned(self) -> None:
        """The daemon has its first plan: leave the planless priority."""
        if not self._waiting_for_plan:
            return
        self._waiting_for_plan = False
        for inst in self._instances:
            log.info(
                "%s: %s (VRID %d): first plan: priority %d",
                self.interface, inst.config.name, inst.config.vrid, inst.config.priority,
                extra={**inst.fields, "priority": inst.config.priority},
            )  # fmt: skip
        self._retrack()

    def track(self, failing: Mapping[str, str]) -> None:
        """The daemon's tracked causes that fail now (cause -> what is wrong): the
        dataplane, the cluster source. Tracked interfaces are watched here."""
        failing = {c: why for c, why in failing.items() if not c.startswith("interface ")}
        if failing == self._failing:
            return
        for cause in sorted(failing.keys() - self._failing.keys()):
            log.warning(
                "%s: tracking: %s failing: %s", self.interface, cause, failing[cause],
                extra={"interface": self.interface, "cause": cause, "error": failing[cause]},
            )  # fmt: skip
        for cause in sorted(self._failing.keys() - failing.keys()):
            log.info(
                "%s: tracking: %s recovered", self.interface, cause,
                extra={"interface": self.interface, "cause": cause},
            )  # fmt: skip
        self._failing = dict(failing)
        self._retrack()

    def hold(self, instances: Mapping[str, str]) -> None:
        """Instances held in Fault by the operator (instance -> why, e.g. a planned
        handover): a master resigns with priority 0, so its peer takes over after
        Skew_Time, and none of them takes the VIPs back until released."""
        if dict(instances) == self._held:
            return
        for name in sorted(instances.keys() - self._held.keys()):
            log.warning(
                "%s: %s: held back: %s", self.interface, name, instances[name],
                extra={"interface": self.interface, "instance": name, "why": instances[name]},
            )  # fmt: skip
        for name in sorted(self._held.keys() - instances.keys()):
            log.info(
                "%s: %s: released", self.interface, name,
                extra={"interface": self.interface, "instance": name},
            )  # fmt: skip
        self._held = dict(instances)
        self._retrack(cleared="released by the operator")

    @property
    def failing(self) -> dict[str, str]:
        """Every tracked cause failing now, with what is wrong."""
        every = {**self._failing, **self._interfaces_failing}
        return {c: every[c] for c in sorted(every) if c in self._weights}

    def _announcer(self, interface: str) -> Announcer:
        return Announcer(
            interface,
            garp_count=self.ha.garp_count,
            garp_interval=self.ha.garp_interval,
            garp_refresh=self.ha.garp_refresh,
        )

    def _wanted(self, config: VrrpInstance) -> tuple[int, str | None]:
        """(priority, why Fault or None) from the plan, tracking, the operator's hold
        and our own link: at start and after each change of any of them."""
        base = PLANLESS_PRIORITY if self._waiting_for_plan else config.priority
        priority, fault = effective(base, self._weights, self.failing)
        fault = self._held.get(config.name, fault)
        return priority, fault if self._link_up else LINK_DOWN

    def _retrack(self, cleared: str = "") -> None:
        """Priority and Fault from the plan, the tracked causes and our own link."""
        if self._loop is None:
            return
        now = self._loop.time()
        for inst in self._instances:
            priority, fault = self._wanted(inst.config)
            self._apply(inst, inst.router.set_priority(priority, now))
            self._apply(inst, inst.router.set_fault(fault, now, cleared=cleared))

    def group(self, instance: str) -> VipGroup:
        return next(i.vips for i in self._instances if i.config.name == instance)

    def _assign(self, vips: Iterable[Vip]) -> None:
        self._all_vips = tuple(vips)
        for inst in self._instances:
            self._changed(inst, *inst.vips.replace(instance_vips(inst.config, self._all_vips)))

    def _changed(self, inst: Instance, added: list[str], removed: list[str]) -> None:
        if inst.router.state == "master":
            self._spawn(inst.announcer.hold(added))
            self._spawn(inst.announcer.release(removed))
        elif added or removed:
            # Not ours to hold: this also clears what a killed earlier run left behind.
            self._spawn(inst.announcer.release(removed + added))

    def held(self, instance: str) -> set[str]:
        """The addresses on this host's interface (or the instance's macvlan) now."""
        return next(i.announcer.held for i in self._instances if i.config.name == instance)

    async def _make_vmac(self, inst: Instance) -> None:
        """use_vmac: the macvlan and its announcer (the VIPs, GARPs from the virtual MAC).
        Adverts still leave by the interface, as keepalived's vmac_xmit_base: a macvlan
        takes every multicast frame whose source is its own MAC, so two hosts that both
        had the virtual MAC up (a split brain) would never hear each other's adverts."""
        vmac = Vmac(self.interface, inst.config.vrid)
        await vmac.create()
        inst.vmac = vmac
        inst.announcer = self._announcer(vmac.name)
        await inst.announcer.start()
        log.info("%s: %s (VRID %d): virtual MAC %s on %s", self.interface, inst.config.name,
                 inst.config.vrid, vmac.mac, vmac.name,
                 extra={**inst.fields, "mac": vmac.mac, "link": vmac.name})  # fmt: skip

    async def _vmac_master(self, inst: Instance) -> None:
        assert inst.vmac is not None
        async with inst.lock:
            await inst.vmac.set_up(True)
            await inst.announcer.hold(inst.vips)

    async def _vmac_leave(self, inst: Instance) -> None:
        assert inst.vmac is not None
        async with inst.lock:
            await inst.announcer.release(inst.vips)
            # Down, it takes no frame for the virtual MAC: the new master gets them all.
            await inst.vmac.set_up(False)

    def status(self, *, detail: bool = True) -> HaStatus:
        """`detail=False`: without the per-VIP lists (vips, holding), which are O(VIPs)."""
        loop_now = self._loop.time() if self._loop else 0.0
        wall = time.time()
        return HaStatus(
            interface=self.interface,
            instances=tuple(i.status(wall, loop_now, detail=detail) for i in self._instances),
            dropped=dict(self.dropped),
            garps_sent=sum(a.frames_sent for a in self._announcers()),
            failing=self.failing,
        )

    async def stop(self) -> None:
        """Resign (priority 0) so the backups take over at once, then remove our VIPs."""
        if self._loop is None:
            return
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        now = self._loop.time()
        for inst in self._instances:
            self._apply(inst, inst.router.shutdown(now))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for channel in self._channels.values():
            self._loop.remove_reader(channel.recv.fileno())
            channel.close()
        self._channels.clear()
        for announcer in self._announcers():
            await announcer.close()
        for inst in self._instances:
            if inst.vmac is not None:
                await inst.vmac.remove()
        if self._ipr is not None:
            self._ipr.close()

    def _announcers(self) -> list[Announcer]:
        return list(
            {id(a): a for a in (self.announcer, *(i.announcer for i in self._instances))}.values()
        )

    # -- internals --------------------------------------------------------------------
    def _spawn(self, coro: object) -> None:
        if not asyncio.iscoroutine(coro):
            return
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: %s", self.interface, task.exception(),
                extra={"interface": self.interface, "error": str(task.exception())},
            )  # fmt: skip

    def _apply(self, inst: Instance, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                inst.send(self._channels[inst.family], action.priority)
            elif isinstance(action, Transition):
                self._transition(inst, action)
            elif isinstance(action, Announce):
                if inst.announcer.sending:
                    continue  # adverts in a row from the other side: the burst under way will do
                log.info(
                    "%s: %s (VRID %d): announcing the VIPs again (%s)",
                    self.interface, inst.config.name, inst.config.vrid, action.reason,
                    extra={**inst.fields, "reason": action.reason},
                )  # fmt: skip
                inst.announcer.burst(inst.vips)
        self._schedule(inst)

    def _transition(self, inst: Instance, t: Transition) -> None:
        log.info(
            "%s: %s (VRID %d): %s -> %s (%s)",
            self.interface, inst.config.name, inst.config.vrid, t.old, t.new, t.reason,
            extra={**inst.fields, "old": t.old, "new": t.new, "reason": t.reason},
        )  # fmt: skip
        if t.new == "master":
            take = self._vmac_master(inst) if inst.vmac else inst.announcer.hold(inst.vips)
            self._spawn(take)
        elif t.old == "master":
            leave = self._vmac_leave(inst) if inst.vmac else inst.announcer.release(inst.vips)
            self._spawn(leave)
        if self.on_change is not None:
            for s in self.status(detail=False).instances:
                if s.vrid == inst.config.vrid and s.family == inst.config.family:
                    self.on_change(s)

    def _schedule(self, inst: Instance) -> None:
        assert self._loop is not None
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        deadline = inst.router.deadline
        if deadline is not None:
            inst.timer = self._loop.call_at(deadline, self._expire, inst)

    def _expire(self, inst: Instance) -> None:
        assert self._loop is not None
        inst.timer = None
        self._apply(inst, inst.router.expire(self._loop.time()))

    def _readable(self, channel: VrrpSockets) -> None:
        assert self._loop is not None
        vrids = {i.config.vrid for i in self._instances if i.family == channel.family}
        for _ in range(64):  # bounded: a flood must not starve the timers
            try:
                got = channel.read()
            except vrrp.AdvertError as e:
                self.dropped[e.reason] += 1
                continue
            except OSError as e:
                log.debug("%s: receive: %s", self.interface, e,
                          extra={"interface": self.interface, "error": str(e)})  # fmt: skip
                return
            if got is None:
                return
            message, source, destination, ttl = got
            if source == channel.source:
                continue  # our own advert, looped back by a bridge or unicast to ourselves
            self._receive(channel, vrids, message, source, destination, ttl)

    def _receive(
        self,
        channel: VrrpSockets,
        vrids: set[int],
        message: bytes,
        source: str,
        destination: str,
        ttl: int,
    ) -> None:
        assert self._loop is not None
        owner = next(
            (
                i
                for i in self._instances
                if i.family == channel.family and len(message) > 1 and i.config.vrid == message[1]
            ),
            None,
        )
        try:
            received = vrrp.decode(
                message,
                family=channel.family,
                source=source,
                destination=destination,
                ttl=ttl,
                vrids=vrids,
            )
        except vrrp.AdvertError as e:
            (owner.dropped if owner else self.dropped)[e.reason] += 1
            why = {"interface": self.interface, "reason": e.reason, "source": source}
            log.debug("%s: dropped advert: %s", self.interface, e, extra=why)
            return
        assert owner is not None
        if not vrrp.from_peer(source, owner.config.accepted_peers):
            owner.dropped["not_a_peer"] += 1
            why = {"interface": self.interface, "reason": "not_a_peer", "source": source}
            log.debug("%s: dropped advert: not_a_peer: from %s", self.interface, source, extra=why)
            return
        owner.adverts_in += 1
        self._apply(owner, owner.router.receive(received.advert, source, self._loop.time()))

    async def _watch_link(self) -> None:
        """Our interface (down: Fault) and the tracked ones, every LINK_POLL."""
        assert self._ipr is not None and self._link is not None and self._loop is not None
        while True:
            await asyncio.sleep(LINK_POLL)
            now_up = down_reason(self.interface) is None  # vanished counts as down
            tracked: dict[str, str] = {}
            for t in self.ha.track.interfaces:
                why = down_reason(t.name)
                if why is not None:
                    tracked[f"interface {t.name}"] = why
            if now_up == self._link_up and tracked == self._interfaces_failing:
                continue
            cleared = ""
            if now_up != self._link_up:
                log.info("%s: link %s", self.interface, "up" if now_up else "down",
                         extra={"interface": self.interface, "up": now_up})  # fmt: skip
                cleared = "interface up" if now_up else ""
            for cause in sorted(tracked.keys() - self._interfaces_failing.keys()):
                log.warning(
                    "%s: tracking: %s %s", self.interface, cause, tracked[cause],
                    extra={"interface": self.interface, "cause": cause, "error": tracked[cause]},
                )  # fmt: skip
            for cause in sorted(self._interfaces_failing.keys() - tracked.keys()):
                log.info(
                    "%s: tracking: %s up again", self.interface, cause,
                    extra={"interface": self.interface, "cause": cause},
                )  # fmt: skip
            self._link_up, self._interfaces_failing = now_up, tracked
            self._retrack(cleared)

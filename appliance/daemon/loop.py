"""The level-triggered loop: any change marks the state dirty; the loop waits a few
milliseconds for the burst to settle, plans, and makes every adapter match the plan.

    daemon = Daemon(config, parts, load_config=lambda: load_config(path))
    await daemon.run()          # until request_stop(); SIGHUP -> reload()

Nothing an adapter does can stop the loop: a failed apply is logged, shown on the page
and retried with backoff; the other adapters still get the new plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from appliance.config import Config, ConfigError, DnsConfig
from appliance.daemon import events
from appliance.daemon.events import Counters, Event, SyncRecord
from appliance.daemon.notify import Notifier
from appliance.daemon.parts import DnsPart, Parts, SourcePart
from appliance.daemon.resign import Resignations
from appliance.daemon.statestore import AllocationStore, SnapshotStore
from appliance.daemon.stop import stop_parts
from appliance.dataplane.base import ApplyReport, Dataplane
from appliance.ha.status import InstanceStatus
from appliance.health.state import Verdict
from appliance.health.targets import Target, derive_targets
from appliance.model import ClusterState, DesiredState, Problem
from appliance.plan import Planner
from appliance.plan.snapshotfile import SavedState

log = structlog.get_logger("appliance.daemon")

DEBOUNCE = 0.005  # seconds: a burst of watch events becomes one plan
TICK = 1.0  # seconds between liveness ticks (watchdog, page refresh) when idle
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # backoff after a failed apply
RESTART_SECTIONS = ("dataplane", "ha", "dns", "web", "state_dir")
CONNECTIONS_EVERY = 5.0  # seconds between reads of the active connections (the page's refresh)
# IPVS keeps a leaving real server at weight 0 while it has connections (up to the
# dataplane's drain_timeout), and only an apply() takes it out: while any is left, the last
# plan is applied again this often, so it goes when its last connection does.
DRAIN_RECHECK = 1.0
EVENTS_KEPT = 200
# seconds the source has from start before a saved snapshot is served: a files source (or
# an API that answers) is there by then, and its plan is never preceded by a stale one
SAVED_GRACE = 0.5


class Daemon:
    def __init__(
        self,
        config: Config,
        parts: Parts,
        *,
        load_config: Callable[[], Config] | None = None,
        make_source: Callable[[Config], SourcePart] | None = None,
        make_dns: Callable[[DnsConfig], DnsPart | None] | None = None,
        notifier: Notifier | None = None,
        debounce: float = DEBOUNCE,
        tick: float = TICK,
        host: str | None = None,
        connections_every: float = CONNECTIONS_EVERY,
        store: AllocationStore | None = None,
        resignations: Resignations | None = None,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.config = config
        self.parts = parts
        self.source = parts.source
        self.load_config = load_config
        self.make_source = make_source
        self.make_dns = make_dns
        self.notifier = notifier or Notifier({})
        self.debounce = debounce
        self.tick = tick
        self.host = host or socket.gethostname()
        # The state file's allocations are the previous plan's: with no status to read (a
        # files source, write_status false) they are all that keeps a VIP where it was.
        self.store = store
        self.planner = Planner(config, previous=store.load() if store is not None else None)
        self.resignations = resignations or Resignations(
            None, [i.name for i in config.ha.instances]
        )
        self.resignations.load()
        self.state: ClusterState | None = None
        # The last live snapshot is saved (`snapshots`); at start, until the source's first,
        # the saved one is served (`saved`): a reboot during an API outage keeps the plan.
        self.snapshots = snapshots
        self.saved: SavedState | None = None
        self.saved_grace = SAVED_GRACE
        self.desired: DesiredState | None = None
        self.report: ApplyReport | None = None
        self.last_sync: SyncRecord | None = None
        self.health_problems: tuple[Problem, ...] = ()
        # (vip, port, protocol) -> real server address -> active connections, as the kernel
        # said at `connections_at` (wall clock); read off the sync path, every few seconds.
        self.connections: Mapping[tuple[str, int, str], Mapping[str, int]] = {}
        self.connections_at: float | None = None
        self.connections_every = connections_every
        self.drain_recheck = DRAIN_RECHECK
        self._applying = asyncio.Lock()  # a sync's apply and a drain's never interleave
        self._connections_wake = asyncio.Event()  # the dataplane changed: read again soon
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.counters = Counters()
        self.started = time.time()
        self.ready = False
        self.stopping = False
        self.restart_needed: tuple[str, ...] = ()  # config sections a reload could not apply
        # What the running parts were built from: a reload is compared with this, not with
        # the previous reload, so a pending restart is never forgotten.
        self._built = {s: getattr(config, s) for s in RESTART_SECTIONS}
        self._dns_wanted: DnsConfig | None = None
        self.on_sync: list[Callable[[SyncRecord], None]] = []  # metrics observe durations
        self.on_tick: list[Callable[[], None]] = []  # after each sync and tick: the page's copy
        self._dirty = False
        self._wake = asyncio.Event()
        self._retry_delay = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._publishing: asyncio.Task[None] | None = None
        self._dataplane_error: str | None = None  # the last apply's failure, until one works
        self._source_down_since: float | None = None  # the source said it is not connected
        if parts.health is not None:
            parts.health.on_change = self.mark_dirty
            parts.health.on_transition = self._health_changed
        if parts.speaker is not None:
            parts.speaker.on_change = self._vrrp_changed

    # --- what the outside calls --------------------------------------------------------

    def mark_dirty(self) -> None:
        """Something changed: plan again soon. Cheap; call as often as you like."""
        self._dirty = True
        self._wake.set()

    def request_stop(self) -> None:
        """SIGTERM: leave the loop, resign VRRP, remove VIPs, return from run()."""
        if not self.stopping:
            self.event("info", "stopping")
        self.stopping = True
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: read the config again. A bad one is logged and the old one stays."""
        if self.load_config is None:
            return False
        try:
            new = self.load_config()
        except ConfigError as e:
            self.counters.reloads["refused"] += 1
            log.error("reload refused; the running config stays", errors=list(e.errors))
            self.event("error", "reload refused: " + "; ".join(e.errors[:3]))
            return False
        except Exception as e:  # an unreadable file, a bug in the parser: same rule
            self.counters.reloads["refused"] += 1
            log.error("reload refused; the running config stays", error=str(e))
            self.event("error", f"reload refused: {e}")
            return False
        old = self.config
        self.config = new
        # A new Planner for the new config, seeded so every VIP stays where it is.
        self.planner = Planner(new, previous=self.planner.allocations)
        # The VRRP instances, the backend and the web are built at start; DNS is rebuilt
        # on the loop (new zones, new addresses) before the next sync.
        pending = [s for s in RESTART_SECTIONS if self._built[s] != getattr(new, s)]
        if "dns" in pending and self.make_dns is not None:
            pending.remove("dns")
            self._dns_wanted = new.dns
        self.restart_needed = tuple(pending)
        if new.cluster != old.cluster and self.make_source is not None:
            self._replace_source(self.make_source(new))
        self.counters.reloads["ok"] += 1
        note = f" ({', '.join(pending)} change at the next restart)" if pending else ""
        log.info("reloaded", restart_needed=pending)
        self.event("info", f"config reloaded{note}")
        self.mark_dirty()
        return True

    def event(self, level: str, message: str) -> None:
        self.events.append(Event(time.time(), level, message))

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        self._wake = asyncio.Event()  # bound to the running loop
        if self._dirty or self.stopping:
            self._wake.set()
        try:
            self._track()  # a resigned instance is held back before it ever speaks
            await self._start_parts()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval())
                self._wake.clear()
                self._alive()
                if self.stopping:
                    break
                if self._dirty:
                    await asyncio.sleep(self.debounce)  # let the burst settle
                    if self.stopping:
                        break
                    self._dirty = False
                    await self.sync()
        finally:
            await self._shutdown()

    def _interval(self) -> float:
        w = self.notifier.watchdog_interval
        return min(self.tick, w) if w else self.tick

    def _alive(self) -> None:
        # From the loop itself: a loop stuck in a sync stops the pings and systemd restarts us.
        if self.notifier.watchdog_interval:
            self.notifier.watchdog()
        self._track()
        self._ticked()

    def _track(self) -> None:
        """Tell VRRP what this host cannot serve now (ha.track): a dataplane that cannot
        be programmed, a cluster source failing for longer than ha.track.source_after."""
        if self.parts.speaker is None:
            return
        failing: dict[str, str] = {}
        if self._dataplane_error is not None:
            failing["dataplane"] = f"cannot be programmed: {self._dataplane_error}"
        now = time.time()
        if self.source.status().get("connected", True):
            self._source_down_since = None
        elif self._source_down_since is None:
            self._source_down_since = now
        since = self._source_down_since
        if since is not None and now - since >= self.config.ha.track.source_after:
            at = time.strftime("%H:%M:%S", time.gmtime(since))
            failing["source"] = f"{self.source.kind} unreachable since {at} UTC"
        self.parts.speaker.track(failing)
        self.parts.speaker.hold(self.resignations.active(now))

    # --- planned handover (appliance ha resign / resume) -------------------------------

    def resign(self, instance: str | None, seconds: float | None) -> list[str]:
        """Hand the instance(s) to the peer and hold them back. Raises ResignError."""
        names = self.resignations.resign(instance, seconds, time.time())
        for r in self.resignations.listing():
            if r["instance"] in names:
                self.event("warning", f"VRRP {r['instance']}: {r['reason']}")
                log.warning("resigned", instance=r["instance"], until=r["until"])
        self._track()
        self._wake.set()
        return names

    def resume(self, instance: str | None) -> list[str]:
        names = self.resignations.resume(instance)
        for name in names:
            self.event("info", f"VRRP {name}: resumed by the operator")
            log.info("resumed", instance=name)
        self._track()
        self._wake.set()
        return names

    def _ticked(self) -> None:
        for hook in self.on_tick:
            try:
                hook()
            except Exception as e:  # the page must never take the loop down
                log.error("status snapshot failed", error=repr(e))

    async def _start_parts(self) -> None:
        p = self.parts
        if p.dns is not None:
            await p.dns.start()
        if p.speaker is not None:
            await p.speaker.start()
        if p.health is not None:
            self._spawn("health", p.health.run())
        if self.snapshots is not None:
            self._spawn("saved", self._serve_saved(self.snapshots))
            self._spawn("snapshots", self.snapshots.run())
        await self.source.open()
        self._spawn("source", self._follow(self.source))
        if p.dataplane is not None:
            self._spawn("connections", self._read_connections(p.dataplane))
        self.event("info", f"started on {self.host}")
        log.info("started", host=self.host, source=self.source.kind)

    def _spawn(self, name: str, coro: Any) -> None:
        self._tasks[name] = asyncio.create_task(coro, name=name)

    async def _follow(self, source: SourcePart) -> None:
        """Take each snapshot the source yields; restart the source if it ever fails."""
        while True:
            try:
                async for state in source.states():
                    if self.saved is not None:
                        self.event(
                            "info", "the cluster source answered: its plan replaces the saved one"
                        )
                    self.state, self.saved = state, None
                    self.mark_dirty()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.counters.source_restarts += 1
                log.error("cluster source failed; restarting it", error=str(e))
                self.event("error", f"cluster source failed: {e}")
                await asyncio.sleep(1.0)

    async def _serve_saved(self, snapshots: SnapshotStore) -> None:
        """The saved snapshot, if the source has delivered none within SAVED_GRACE of the
        start nor by the time the file is read (in a thread: 50,000 Services take seconds).
        It is served as not live: the speaker keeps its planless priority, no status is
        written back."""
        until = asyncio.get_running_loop().time() + self.saved_grace
        saved = await asyncio.to_thread(snapshots.load)
        if saved is None:
            return
        await asyncio.sleep(until - asyncio.get_running_loop().time())  # <= 0: at once
        if self.state is not None:
            return
        self.state, self.saved = saved.state, saved
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.saved_at))
        log.warning(
            "serving the saved cluster state until the source answers",
            saved_at=saved.saved_at,
            services=saved.services,
        )
        self.event(
            "warning",
            f"serving the last known plan saved at {when} ({saved.services} services); "
            "the cluster source has not answered since start",
        )
        self.mark_dirty()

    async def _read_connections(self, dataplane: Dataplane) -> None:
        """Now and then, never on the sync path: a slow conntrack dump delays only itself.
        The backend logs its own errors and answers {} (the page then shows "-")."""
        self._connections_wake = asyncio.Event()  # bound to the running loop
        while True:
            self._connections_wake.clear()
            try:
                found = await dataplane.connections()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a backend that broke its promise: still not fatal
                log.warning("dataplane connections unreadable", error=str(e))
                found = {}
            self.connections = found
            self.connections_at = time.time()
            # A change (new services, nodes gone) shows within a second, not at the next
            # round; a burst of changes still costs at most one read a second.
            await asyncio.sleep(min(1.0, self.connections_every))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._connections_wake.wait(), max(0.0, self.connections_every - 1.0)
                )

    def _replace_source(self, source: SourcePart) -> None:
        old_task = self._tasks.pop("source", None)
        old = self.source
        self.source = source

        async def swap() -> None:
            if old_task is not None:
                old_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await old_task
            await old.close()
            await source.open()
            await self._follow(source)

        self._spawn("source", swap())

    async def sync(self) -> SyncRecord | None:
        """One pass: plan, then every adapter. Returns None before the first snapshot."""
        state, saved = self.state, self.saved
        if state is None:
            return None
        started, t0 = time.time(), time.perf_counter()
        if self._dns_wanted is not None:
            await self._swap_dns(self._dns_wanted)
        p = self.parts
        errors: list[str] = []
        health = p.health.health() if p.health is not None else None
        desired = self.planner.plan(state, health)
        if self.store is not None:  # before any VIP goes on the wire; a no-op if unchanged
            self.store.save(desired.allocations)
        if self.snapshots is not None and saved is None:  # written later, off the loop
            self.snapshots.offer(state, started)
        changed = False
        if p.dataplane is not None:
            try:
                async with self._applying:
                    self.report = await p.dataplane.apply(desired)
                changed = not self.report.unchanged
                self._dataplane_error = None
                for w in self.report.warnings:
                    log.warning("dataplane", warning=w)
            except Exception as e:  # DataplaneError or worse: the other adapters still run
                errors.append(f"dataplane: {e}")
                self._dataplane_error = str(e)
        if p.speaker is not None:
            try:
                # A saved plan is not live: the speaker stays at its planless priority.
                p.speaker.set_vips(desired.vips, planned=saved is None)
            except Exception as e:
                errors.append(f"vrrp: {e}")
        if p.dns is not None:
            try:
                await p.dns.update(desired.records)
            except Exception as e:
                errors.append(f"dns: {e}")
        if p.health is not None:
            try:
                targets = derive_targets(state, desired, self.config.health)
                self.health_problems = targets.problems
                p.health.update(targets.targets)
            except Exception as e:  # the checks keep their old targets; the rest goes on
                errors.append(f"health: {e}")
        if saved is None:  # a saved snapshot is stale: never written back as status
            self._publish(state, desired)
        report = self.report if changed else None
        for told in events.plan_events(self.desired, desired, report):
            self.event(*told)
        self.desired = desired
        if p.dataplane is not None:
            self._finish_drains(p.dataplane)
        record = SyncRecord(
            started, time.perf_counter() - t0, changed, events.summary(desired), tuple(errors)
        )
        self.last_sync = record
        self._track()
        if changed:
            self._connections_wake.set()
        self._after(record)
        self._ticked()
        return record

    def _finish_drains(self, dataplane: Dataplane) -> None:
        """Real servers still draining: apply the last plan again every drain_recheck
        until none is left (one task; a sync in between does the same work)."""
        running = self._tasks.get("drains")
        if dataplane.pending_drains() > 0 and (running is None or running.done()):
            self._spawn("drains", self._drain(dataplane))

    async def _drain(self, dataplane: Dataplane) -> None:
        while dataplane.pending_drains() > 0 and not self.stopping:
            await asyncio.sleep(self.drain_recheck)
            desired = self.desired
            if desired is None or self.stopping:
                return
            try:
                async with self._applying:
                    report = await dataplane.apply(desired)
            except Exception as e:  # the next sync applies, and reports, again
                log.warning("dataplane: finishing drains failed", error=str(e))
                return
            if not report.unchanged:
                self.report = report
                log.info("dataplane: drained", draining=len(report.draining),
                         summary=report.summary())  # fmt: skip
                self._connections_wake.set()

    async def _swap_dns(self, wanted: DnsConfig) -> None:
        """Stop the DNS server and start one for the new config; if that cannot listen,
        bring the old one back (an old zone beats no answers)."""
        assert self.make_dns is not None
        self._dns_wanted = None
        old_config = self._built["dns"]
        assert isinstance(old_config, DnsConfig)
        if self.parts.dns is not None:
            await self.parts.dns.stop()
        new = self.make_dns(wanted)
        try:
            if new is not None:
                await new.start()
            self._built["dns"] = wanted
            self.event("info", "DNS restarted with the new config")
        except OSError as e:
            log.error("dns: the new config cannot listen; the old one stays", error=str(e))
            self.event("error", f"DNS not reloaded: {e}; the old config stays")
            new = self.make_dns(old_config)
            if new is not None:
                await new.start()
        self.parts = dataclasses.replace(self.parts, dns=new)

    def _after(self, record: SyncRecord) -> None:
        self.counters.syncs["error" if record.errors else "ok"] += 1
        for observe in self.on_sync:
            observe(record)
        if record.errors:
            for e in record.errors:
                log.error("sync", error=e)
                self.event("error", e)
            self._retry_later()
        else:
            self._retry_delay = 0.0
        log.info(
            "synced",
            seconds=round(record.seconds, 6),
            changed=record.changed,
            summary=record.summary,
            errors=len(record.errors),
        )
        if not self.ready:
            self.ready = True
            self.notifier.ready(record.summary)

    def _retry_later(self) -> None:
        self._retry_delay = min(max(self._retry_delay * 2, RETRY_FIRST), RETRY_MAX)
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self.mark_dirty)

    def _publish(self, state: ClusterState, desired: DesiredState) -> None:
        """Status write-back in the background: a slow API must not hold up the kernel."""
        if self._publishing is not None and not self._publishing.done():
            self._publishing.cancel()  # level-triggered: the newer plan supersedes it
        source = self.source

        async def publish() -> None:
            try:
                await source.publish(state, desired)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("status write-back failed", error=str(e))
                self.event("warning", f"status write-back: {e}")

        self._publishing = asyncio.create_task(publish())

    def _health_changed(self, target: Target, before: Verdict, after: Verdict, error: str) -> None:
        """A verdict change, as the checker tells it (once, when it happens): an event on
        the page. The checker itself writes the log line; this adds none."""
        told = events.health_event(target, before, after, error)
        if told is not None:
            self.event(*told)

    def _vrrp_changed(self, status: InstanceStatus) -> None:
        self.counters.vrrp_transitions[(status.name, status.state)] += 1
        self.event("info", f"VRRP {status.name}: {status.state} ({status.reason})")
        log.info("vrrp", instance=status.name, state=status.state, reason=status.reason)
        self._wake.set()  # refresh the page now, not at the next tick

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        if self._retry is not None:
            self._retry.cancel()
        tasks = list(self._tasks.values())
        if self._publishing is not None:
            tasks.append(self._publishing)
        await stop_parts(self.parts, self.source, self.snapshots, tasks)
        log.info("stopped")

"""The VRRPv3 state machine of one virtual router (RFC 5798 6.4, RFC 9568 6.4): pure.

No sockets and no clock of its own: the caller passes `now` (seconds, monotonic) to every
event and gets back the actions to carry out, and asks `deadline` when to call `expire`.
That keeps every timer testable to the centisecond on a fake clock.

Beyond the RFC, as keepalived does it: a Fault state while the interface is down, a
preempt delay (after start, a higher-priority backup waits this long before preempting),
and a master that hears a lower-priority master (a split brain healing) answers at once
and announces its VIPs again, so the LAN forgets the other side's MAC.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Literal

from appliance.ha.vrrp import PRIORITY_OWNER, PRIORITY_STOP, Advert

State = Literal["initialize", "backup", "master", "fault"]
LINK_DOWN = "interface down"


@dataclass(frozen=True, slots=True)
class Send:
    """Send an advert with this priority (0 when resigning)."""

    priority: int


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    reason: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce our VIPs again (a GARP / NA burst): another master was heard with a lower
    priority, the end of a split brain; the LAN may have followed its announcements."""

    reason: str


Action = Send | Transition | Announce


@dataclass(frozen=True, slots=True)
class RouterSettings:
    vrid: int
    priority: int  # 1..255; 255 is the address owner
    interval_cs: int  # our Advertisement_Interval
    address: str  # our primary address: the tie-break between equal priorities
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds after start before a backup may preempt

    def __post_init__(self) -> None:
        if not 1 <= self.priority <= 255:
            raise ValueError(f"VRID {self.vrid}: priority {self.priority} must be 1..255")
        if not 1 <= self.interval_cs <= 0x0FFF:
            raise ValueError(f"VRID {self.vrid}: advert interval {self.interval_cs} cs")


class VirtualRouter:
    """One VRID on one interface. Methods take `now` and return the actions, in order."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.state: State = "initialize"
        self.since = 0.0
        self.reason = ""  # why the last transition happened
        self.master_address: str | None = None
        self.master_interval_cs = settings.interval_cs  # Master_Adver_Interval, learned
        self.adver_timer: float | None = None
        self.master_down_timer: float | None = None
        self.fault: str | None = None  # why we must be in Fault (interface down, tracking)
        self._started = 0.0
        self._resigned = False  # the master said priority 0: its leaving, not a failure

    # -- RFC 5798 6.1 derived values -------------------------------------------------
    @property
    def skew_time(self) -> float:
        return (256 - self.settings.priority) * self.master_interval_cs / 256 / 100

    @property
    def master_down_interval(self) -> float:
        return 3 * self.master_interval_cs / 100 + self.skew_time

    @property
    def interval(self) -> float:
        return self.settings.interval_cs / 100

    @property
    def deadline(self) -> float | None:
        """When `expire` has work to do next (None: no timer runs)."""
        timers = [t for t in (self.adver_timer, self.master_down_timer) if t is not None]
        return min(timers) if timers else None

    # -- events ----------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Startup event (6.4.1)."""
        if self.state != "initialize":
            return []
        self._started = now
        if self.fault is not None:
            return self._go("fault", now, self.fault)
        if self.settings.priority == PRIORITY_OWNER:
            return [Send(self.settings.priority), *self._become_master(now, "address owner")]
        self.master_interval_cs = self.settings.interval_cs
        self.master_down_timer = now + self.master_down_interval
        return self._go("backup", now, "startup")

    def shutdown(self, now: float) -> list[Action]:
        """Shutdown event: a master resigns with priority 0 so a backup takes over at once."""
        actions: list[Action] = []
        if self.state == "master":
            actions.append(Send(PRIORITY_STOP))
        self._stop_timers()
        return actions + self._go("initialize", now, "shutdown")

    @property
    def link_up(self) -> bool:
        return self.fault != LINK_DOWN

    @link_up.setter
    def link_up(self, up: bool) -> None:
        """Before start(): the interface's state as found."""
        self.fault = None if up else LINK_DOWN

    def set_link(self, up: bool, now: float) -> list[Action]:
        """The interface went down (Fault, like keepalived) or came back (start over)."""
        if up == self.link_up:
            return []
        return self.set_fault(None if up else LINK_DOWN, now, cleared="interface up")

    def set_fault(self, reason: str | None, now: float, cleared: str = "") -> list[Action]:
        """A reason to be in Fault (our interface down; a tracked cause with weight 0), or
        None when it is gone: then start over, as after the interface came back."""
        old, self.fault = self.fault, reason
        if reason == old:
            return []
        if reason is not None:
            if old is not None and self.state == "fault":
                self.reason = reason  # still in Fault, for another reason now
                return []
            actions: list[Action] = []
            if self.state == "master":
                actions.append(Send(PRIORITY_STOP))  # best effort: the link may carry it
            self._stop_timers()
            if self.state == "initialize":
                return actions
            return actions + self._go("fault", now, reason)
        if self.state != "fault":
            return []
        self.state = "initialize"
        actions = self.start(now)
        if actions and isinstance(actions[-1], Transition):
            actions[-1] = Transition("fault", actions[-1].new, cleared or f"cleared: {old}")
        return actions

    def set_priority(self, priority: int, now: float) -> list[Action]:
        """Our priority changed (the plan arrived, a tracked thing failed). A master tells
        the backups at once, so a lower priority lets a preempting peer take over now."""
        if priority == self.settings.priority:
            return []
        self.settings = replace(self.settings, priority=priority)
        if self.state != "master":
            return []  # the next Master_Down_Interval uses the new skew
        self.adver_timer = now + self.interval
        return [Send(priority)]

    def receive(self, advert: Advert, source: str, now: float) -> list[Action]:
        """An advert for our VRID that passed the codec's checks (6.4.2, 6.4.3)."""
        if advert.vrid != self.settings.vrid:
            return []
        if self.state == "backup":
            return self._backup_receive(advert, source, now)
        if self.state == "master":
            return self._master_receive(advert, source, now)
        return []

    def expire(self, now: float) -> list[Action]:
        """Fire the timers that are due."""
        actions: list[Action] = []
        if (
            self.state == "backup"
            and self.master_down_timer is not None
            and self.master_down_timer <= now
        ):
            actions.append(Send(self.settings.priority))
            why = "master resigned (priority 0)" if self._resigned else "master down"
            actions += self._become_master(now, why)
        elif self.state == "master" and self.adver_timer is not None and self.adver_timer <= now:
            actions.append(Send(self.settings.priority))
            nxt = self.adver_timer + self.interval  # keep the cadence when we run a bit late
            self.adver_timer = nxt if nxt > now else now + self.interval
        return actions

    # -- per state -------------------------------------------------------------------
    def _backup_receive(self, advert: Advert, source: str, now: float) -> list[Action]:
        if advert.priority == PRIORITY_STOP:
            self.master_address = None
            self._resigned = True
            self.master_down_timer = now + self.skew_time
            return []
        self._resigned = False
        may_preempt = self.settings.preempt and now >= self._started + self.settings.preempt_delay
        if not may_preempt or advert.priority >= self.settings.priority:
            self.master_address = source
            self.master_interval_cs = advert.interval_cs
            self.master_down_timer = now + self.master_down_interval
            return []
        # A lower-priority master and we preempt: let Master_Down_Timer run out.
        return []

    def _master_receive(self, advert: Advert, source: str, now: float) -> list[Action]:
        if advert.priority == PRIORITY_STOP:
            self.adver_timer = now + self.interval
            return [Send(self.settings.priority)]
        theirs, ours = advert.priority, self.settings.priority
        if theirs > ours or (
            theirs == ours
            and int(ipaddress.ip_address(source)) > int(ipaddress.ip_address(self.settings.address))
        ):
            self.adver_timer = None
            self.master_address = source
            self.master_interval_cs = advert.interval_cs
            self.master_down_timer = now + self.master_down_interval
            # A last advert as we yield: if the winner spoke first after a split brain it
            # has not heard us, and this tells it to announce its VIPs again.
            reason = f"higher priority {theirs} from {source}"
            return [Send(ours), *self._go("backup", now, reason)]
        # Another master, and ours wins (a split brain healing). Like keepalived, say so at
        # once (the other yields) and win the LAN's neighbour caches back; the advert
        # cadence is kept.
        return [Send(ours), Announce(f"another master {source} with priority {theirs}")]

    # -- helpers ---------------------------------------------------------------------
    def _become_master(self, now: float, reason: str) -> list[Action]:
        self.master_down_timer = None
        self.adver_timer = now + self.interval
        self.master_address = self.settings.address
        return self._go("master", now, reason)

    def _stop_timers(self) -> None:
        self.adver_timer = None
        self.master_down_timer = None

    def _go(self, new: State, now: float, reason: str) -> list[Action]:
        old, self.state, self.since, self.reason = self.state, new, now, reason
        self._resigned = False
        if new not in {"backup", "master"}:
            self.master_address = None
        return [Transition(old, new, reason)]

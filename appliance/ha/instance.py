"""One VRRP instance (VRID) of a speaker: its state machine, the VIP group it owns, the
announcer that holds them, its adverts going out and its counters."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from appliance.address import IPVersion, version_of
from appliance.config import VrrpInstance
from appliance.ha import vrrp
from appliance.ha.announce import Announcer
from appliance.ha.group import VipGroup
from appliance.ha.sockets import VrrpSockets
from appliance.ha.status import InstanceStatus
from appliance.ha.virtual_router import VirtualRouter
from appliance.ha.vmac import Vmac

log = logging.getLogger("appliance.ha.speaker")  # one logger for all the speaker says


class Instance:
    def __init__(
        self, config: VrrpInstance, router: VirtualRouter, announcer: Announcer, interface: str
    ) -> None:
        self.config = config
        self.router = router
        self.announcer = announcer  # the interface's; with use_vmac, the macvlan's own
        self.interface = interface
        self.vmac: Vmac | None = None
        self.lock = asyncio.Lock()  # use_vmac: taking over and leaving, one at a time
        self.vips = VipGroup()
        self.adverts_in = 0
        self.adverts_out = 0
        self.dropped: Counter[str] = Counter()
        # per destination: adverts in a row the kernel refused (absent while they go out)
        self.send_failing: Counter[str] = Counter()
        self.timer: asyncio.TimerHandle | None = None
        # The keys of this instance's log lines (see appliance.logs).
        self.fields: dict[str, object] = {
            "interface": interface,
            "instance": config.name,
            "vrid": config.vrid,
        }

    @property
    def family(self) -> IPVersion:
        return version_of(self.config.family)

    def send(self, sockets: VrrpSockets, priority: int) -> None:
        """One advert to the group, or to each unicast peer."""
        advert = vrrp.Advert(
            self.config.vrid,
            priority,
            self.router.settings.interval_cs,
            self.vips.head(),
            self.family,
        )
        group = vrrp.GROUP_V4 if self.family == 4 else vrrp.GROUP_V6
        for destination in self.config.unicast_peers or (group,):
            message = vrrp.encode(
                advert,
                sockets.source or "",
                destination,
                pseudo_header=not self.config.v3_checksum_as_v2,
            )
            try:
                sockets.sendto(message, destination)
            except OSError as e:  # link down, no route to a unicast peer, a full neighbour table
                self.dropped["send"] += 1
                self.send_failing[destination] += 1
                # A master whose adverts do not leave is a split brain in the making: say so
                # once, not at every interval (the count is in /metrics).
                if self.send_failing[destination] == 1:
                    log.warning(
                        "%s: VRID %d: adverts are not going out (send to %s: %s)",
                        self.interface, self.config.vrid, destination, e,
                        extra={**self.fields, "to": destination, "error": str(e)},
                    )  # fmt: skip
                continue
            self.adverts_out += 1
            failed = self.send_failing.pop(destination, 0)
            if failed:
                log.warning(
                    "%s: VRID %d: adverts to %s go out again, after %d that could not be sent",
                    self.interface, self.config.vrid, destination, failed,
                    extra={**self.fields, "to": destination, "failed": failed},
                )  # fmt: skip

    def status(self, wall: float, loop_now: float, *, detail: bool = True) -> InstanceStatus:
        """`wall`, `loop_now`: the same moment by both clocks (transitions are stamped by
        the loop's). `detail=False`: without the VIP lists, which are O(VIPs)."""
        router = self.router
        return InstanceStatus(
            name=self.config.name,
            vrid=self.config.vrid,
            family=self.config.family,
            state=router.state,
            since=wall - (loop_now - router.since),
            reason=router.reason,
            master=router.master_address,
            priority=router.settings.priority,
            advert_interval=router.settings.interval_cs / 100,
            adverts_in=self.adverts_in,
            adverts_out=self.adverts_out,
            dropped=dict(self.dropped),
            vips=tuple(self.vips) if detail else (),
            holding=tuple(v for v in self.vips if v in self.announcer.held) if detail else (),
            peers=self.config.accepted_peers,
            configured_priority=self.config.priority,
        )

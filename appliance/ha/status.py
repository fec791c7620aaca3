"""What a VRRP speaker reports: per instance its state, master, counters and VIPs. Pure
data, so the daemon, its VRRP process's channel and the page share it without loading the
speaker (raw sockets, pyroute2)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from appliance.address import version_of
from appliance.config import VrrpInstance
from appliance.ha.virtual_router import State
from appliance.model import Vip


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    name: str
    vrid: int
    family: str
    state: State
    since: float  # wall-clock time of the last transition (epoch seconds)
    reason: str  # why that transition happened
    master: str | None  # the master's address as last seen (ours when we are master)
    priority: int
    advert_interval: float
    adverts_in: int
    adverts_out: int
    dropped: Mapping[str, int]  # by reason (vrrp.DROP_REASONS, "send")
    vips: tuple[str, ...]  # the group this instance owns
    holding: tuple[str, ...]  # those of them on this host now
    peers: tuple[str, ...] = ()  # whose adverts we accept; empty: any host on the LAN
    restarts: int = 0  # times the speaker's process was started again after it died
    configured_priority: int = 0  # before the plan and tracking: the config's


@dataclass(frozen=True, slots=True)
class HaStatus:
    interface: str
    instances: tuple[InstanceStatus, ...]
    dropped: Mapping[str, int]  # adverts not attributable to an instance (garbage, other VRIDs)
    garps_sent: int = 0  # gratuitous ARPs and unsolicited NAs, since start
    failing: Mapping[str, str] = field(default_factory=dict)  # tracked cause -> what is wrong

    @property
    def owners(self) -> dict[str, str]:
        """VIP -> the instance holding it on this host."""
        return {vip: i.name for i in self.instances for vip in i.holding}


def instance_vips(
    instance: VrrpInstance, vips: Iterable[Vip], *, every_pool: bool = False
) -> tuple[str, ...]:
    """The VIPs an instance owns: its family, from its pools (all pools if it names none)."""
    version = version_of(instance.family)
    chosen = {
        str(ipaddress.ip_address(v.address))
        for v in vips
        if ipaddress.ip_address(v.address).version == version
        and (every_pool or not instance.pools or v.pool in instance.pools)
    }
    return tuple(sorted(chosen, key=lambda a: int(ipaddress.ip_address(a))))

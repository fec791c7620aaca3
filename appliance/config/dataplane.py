"""The `dataplane` section: backend, forwarding, scheduler, and where VIP traffic arrives.

`interface` is the LB host's interface that VIP traffic comes in on. nftables needs it for
dr (its forwarding hook is bound to a device); it defaults to `ha.interface`, where the
VIPs are announced. IPVS routes by itself and ignores it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from appliance.config.checker import Checker
from appliance.config.types import DataplaneConfig, HaConfig
from appliance.config.values import check_ifname
from appliance.model import SCHEDULERS

BACKENDS = ("ipvs", "nftables", "auto")
FORWARDINGS = ("nat", "dr", "tun")


def read_dataplane(c: Checker, value: object) -> DataplaneConfig:
    path = "dataplane"
    d = c.mapping(value, path, ("backend", "forwarding", "scheduler", "drain_timeout", "interface"))
    return DataplaneConfig(
        backend=cast(Any, c.choice(d, "backend", path, "auto", BACKENDS)),
        forwarding=cast(Any, c.choice(d, "forwarding", path, "nat", FORWARDINGS)),
        scheduler=c.choice(d, "scheduler", path, "rr", SCHEDULERS),
        drain_timeout=c.duration(d, "drain_timeout", path, 300.0, 0.0, 86400.0),
        interface=c.string(d, "interface", path, None, nullable=True, check=check_ifname),
    )


def settle_dataplane(c: Checker, dataplane: DataplaneConfig, ha: HaConfig) -> DataplaneConfig:
    """What the section means beside `ha`: the interface defaults to ha.interface; a mode
    the chosen backend cannot do is one error line."""
    if dataplane.interface is None and ha.interface is not None:
        dataplane = replace(dataplane, interface=ha.interface)
    path = "dataplane.forwarding"
    if dataplane.backend == "nftables" and dataplane.forwarding == "tun":
        c.err(path, "tun needs backend ipvs: nftables cannot put packets in an IPIP tunnel")
    if dataplane.backend == "nftables" and dataplane.forwarding == "dr" and not dataplane.interface:
        c.err(
            path,
            "dr on nftables needs dataplane.interface (or ha.interface): the "
            "interface VIP traffic arrives on, where it is forwarded to the nodes",
        )
    return dataplane

"""The `dataplane` section: backend, forwarding, scheduler."""

from __future__ import annotations

from typing import Any, cast

from appliance.config.checker import Checker
from appliance.config.types import DataplaneConfig
from appliance.model import SCHEDULERS

BACKENDS = ("ipvs", "nftables", "auto")
FORWARDINGS = ("nat", "dr", "tun")


def read_dataplane(c: Checker, value: object) -> DataplaneConfig:
    path = "dataplane"
    d = c.mapping(value, path, ("backend", "forwarding", "scheduler", "drain_timeout"))
    return DataplaneConfig(
        backend=cast(Any, c.choice(d, "backend", path, "auto", BACKENDS)),
        forwarding=cast(Any, c.choice(d, "forwarding", path, "nat", FORWARDINGS)),
        scheduler=c.choice(d, "scheduler", path, "rr", SCHEDULERS),
        drain_timeout=c.duration(d, "drain_timeout", path, 300.0, 0.0, 86400.0),
    )

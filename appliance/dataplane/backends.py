"""The backend a config asks for: the daemon and `appliance apply` both start here."""

from __future__ import annotations

import os

from appliance.config import Config
from appliance.dataplane.base import Dataplane, Ownership


def make_backend(config: Config, backend: str | None = None, netns: str | None = None) -> Dataplane:
    """The backend the config asks for; "auto" is IPVS where the kernel has it loaded."""
    choice = backend or config.dataplane.backend
    if choice == "auto":
        choice = "ipvs" if os.path.exists("/proc/net/ip_vs") else "nftables"
    # Deferred: each backend loads its kernel library (pyroute2's IPVS, libnftables by
    # ctypes), and a host uses one of them.
    if choice == "ipvs":
        from appliance.dataplane.ipvs import IpvsBackend

        return IpvsBackend(config.dataplane, Ownership.of_pools(config.pools), netns=netns)
    from appliance.dataplane.nft import NftablesBackend

    return NftablesBackend(config.dataplane, netns=netns)

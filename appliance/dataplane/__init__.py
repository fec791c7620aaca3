"""The kernel dataplane: `apply(desired) -> ApplyReport`, by difference, never a flush.

`make_backend(config, pools)` picks IPVS or nftables; both implement `base.Dataplane`.
"""

from __future__ import annotations

from appliance.dataplane.base import ApplyReport, Dataplane, DataplaneError, Ownership

__all__ = ["ApplyReport", "Dataplane", "DataplaneError", "Ownership"]

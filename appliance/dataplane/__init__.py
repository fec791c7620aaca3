"""The kernel dataplane: `apply(desired) -> ApplyReport`, by difference, never a flush.

`backends.make_backend(config)` picks IPVS or nftables; both implement `base.Dataplane`
(see docs/dataplane.md).
"""

from __future__ import annotations

from appliance.dataplane.base import ApplyReport, Dataplane, DataplaneError, Ownership

__all__ = ["ApplyReport", "Dataplane", "DataplaneError", "Ownership"]

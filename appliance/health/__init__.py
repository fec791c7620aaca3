"""Health checks of the nodes behind each VIP; their results feed `plan()`.

The names below load on first use, not with the package: every `appliance` command
imports `appliance.health.targets`, and only the daemon and `appliance health check` want
the checker and the structlog it logs with (a tenth of a second to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.health.checker import HealthChecker, TargetStatus
    from appliance.health.probe import Prober
    from appliance.health.targets import Target, Targets, derive_targets
    from appliance.health.verdict import Outcome

_MODULES = {
    "HealthChecker": "checker",
    "TargetStatus": "checker",
    "Prober": "probe",
    "Target": "targets",
    "Targets": "targets",
    "derive_targets": "targets",
    "Outcome": "verdict",
}

__all__ = [
    "HealthChecker",
    "Outcome",
    "Prober",
    "Target",
    "TargetStatus",
    "Targets",
    "derive_targets",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

"""Health checks of the nodes behind each VIP; their results feed `plan()`."""

from appliance.health.checker import HealthChecker, TargetStatus
from appliance.health.probe import Prober
from appliance.health.targets import Target, Targets, derive_targets
from appliance.health.verdict import Outcome

__all__ = [
    "HealthChecker",
    "Outcome",
    "Prober",
    "Target",
    "TargetStatus",
    "Targets",
    "derive_targets",
]

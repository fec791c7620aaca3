"""The pure core: cluster state + config + allocations + health -> desired state."""

from appliance.plan.planner import Planner, is_ours, plan

__all__ = ["Planner", "is_ours", "plan"]

"""What the host can really serve, as keepalived's tracking turns it into VRRP: each
failing cause (the dataplane, the cluster source, a tracked interface) adds its weight to
the priority, or, with weight 0, puts the instance in Fault. Pure."""

from __future__ import annotations

from collections.abc import Mapping

LOWEST, HIGHEST = 1, 254  # a tracked priority never resigns (0) nor claims ownership (255)


def effective(
    priority: int, weights: Mapping[str, int], failing: Mapping[str, str]
) -> tuple[int, str | None]:
    """(the priority to advertise, why the instance must be in Fault or None).
    `failing` maps cause -> what is wrong; a cause with no weight is not tracked."""
    tracked = sorted(c for c in failing if c in weights)
    fault = next((f"{c}: {failing[c]}" for c in tracked if weights[c] == 0), None)
    drop = sum(weights[c] for c in tracked)
    return max(LOWEST, min(HIGHEST, priority + drop)), fault

"""The `health` section: interval, timeout, rise and fall."""

from __future__ import annotations

from appliance.config.checker import Checker, join_key
from appliance.config.types import HealthConfig
from appliance.config.values import fmt_seconds


def read_health(c: Checker, value: object) -> HealthConfig:
    path = "health"
    d = c.mapping(
        value,
        path,
        ("enabled", "interval", "timeout", "rise", "fall", "kube_proxy_port", "max_in_flight"),
    )
    interval = c.duration(d, "interval", path, 2.0, 0.01, 3600.0)
    timeout = c.duration(d, "timeout", path, 1.0, 0.001, 3600.0)
    if timeout >= interval and ("timeout" in d or "interval" in d):
        c.err(
            join_key(path, "timeout"),
            f"must be shorter than health.interval ({fmt_seconds(interval)}),"
            f" got {fmt_seconds(timeout)}",
        )
    return HealthConfig(
        enabled=c.boolean(d, "enabled", path, True),
        interval=interval,
        timeout=timeout,
        rise=c.integer(d, "rise", path, 2, 1, 1000),
        fall=c.integer(d, "fall", path, 3, 1, 1000),
        kube_proxy_port=c.integer(d, "kube_proxy_port", path, 10256, 1, 65535),
        max_in_flight=c.integer(d, "max_in_flight", path, 1024, 1, 100_000),
    )

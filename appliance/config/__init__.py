"""appliance.yaml: the typed configuration and the loader that validates it.

`load_config` / `parse_config` read it (`load`), one module a section checks it (`cluster`,
`pools`, `dataplane`, `ha`, `dns`, `health`, `web`) with the collecting `checker.Checker`,
`positions` finds the line of every value, and `types` is what the rest of the code sees.
"""

from appliance.address import IPRange
from appliance.config.load import ConfigError, load_config, parse_config
from appliance.config.types import (
    ClusterConfig,
    Config,
    DataplaneConfig,
    DnsConfig,
    HaConfig,
    HealthConfig,
    LabelRequirement,
    LabelSelector,
    Pool,
    TrackConfig,
    TrackInterface,
    VrrpInstance,
    WebConfig,
)
from appliance.config.values import fmt_seconds, parse_duration, parse_listen, parse_range

__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataplaneConfig",
    "DnsConfig",
    "HaConfig",
    "HealthConfig",
    "IPRange",
    "LabelRequirement",
    "LabelSelector",
    "Pool",
    "TrackConfig",
    "TrackInterface",
    "VrrpInstance",
    "WebConfig",
    "fmt_seconds",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen",
    "parse_range",
]

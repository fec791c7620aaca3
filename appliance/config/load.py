"""appliance.yaml -> `Config`: parse, validate, report every problem at once.

Every error is one line, `<path>: <message>`, where path is the place in the YAML
(`pools[1].addresses[0]`). `load_config` adds `<file>:<line>:` in front, found from the
YAML node tree, and also rejects duplicate keys (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from appliance.config.checker import Checker, Errors, resolve
from appliance.config.cluster import read_cluster
from appliance.config.dataplane import read_dataplane, settle_dataplane
from appliance.config.dns import read_dns
from appliance.config.ha import read_ha
from appliance.config.health import read_health
from appliance.config.pools import read_pools
from appliance.config.positions import YamlError, read_yaml
from appliance.config.types import Config
from appliance.config.web import read_web


class ConfigError(Exception):
    """The configuration is unusable; `errors` has every reason, one line each."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


_SECTIONS = ("cluster", "pools", "dataplane", "ha", "dns", "health", "web", "state_dir")
STATE_DIR = "/var/lib/appliance"


def _parse(data: object, source: str, base_dir: Path | None) -> tuple[Config | None, Errors]:
    errors: Errors = []
    c = Checker(errors, base_dir)
    if data is None:
        c.err("(top level)", "the configuration is empty")
        return None, errors
    top = c.mapping(data, "", _SECTIONS, "a mapping of sections (cluster, pools, ...)")
    if not isinstance(data, dict):
        return None, errors
    pools = read_pools(c, top.get("pools"))
    cluster = read_cluster(c, top.get("cluster"))
    dataplane = read_dataplane(c, top.get("dataplane"))
    ha = read_ha(c, top.get("ha"), pools)
    config = Config(
        pools=pools,
        cluster=cluster,
        dataplane=settle_dataplane(c, dataplane, ha),
        ha=ha,
        dns=read_dns(c, top.get("dns")),
        health=read_health(c, top.get("health")),
        web=read_web(c, top.get("web")),
        state_dir=resolve(c, c.string(top, "state_dir", "", STATE_DIR)),
        source=source,
    )
    return (None if errors else config), errors


def parse_config(
    data: object, source: str = "", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate what yaml.safe_load gave. Relative paths resolve against `base_dir`
    (kept as written when it is None). Raises ConfigError with every problem found."""
    config, errors = _parse(data, source, Path(base_dir) if base_dir is not None else None)
    if config is None:
        raise ConfigError(f"{p}: {m}" for p, m in errors)
    return config


# --- files --------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate appliance.yaml; every error line starts with `<file>:<line>:`."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([f"{name}: cannot read: {e.strerror or e}"]) from None
    try:
        doc = read_yaml(raw, name)
    except YamlError as e:
        raise ConfigError([str(e)]) from None
    if doc.data is None:
        raise ConfigError([f"{name}: the file is empty (or only comments)"])
    config, errors = _parse(doc.data, name, Path(name).resolve().parent)
    errors = doc.duplicates + errors
    if errors:

        def fmt(p: str, m: str) -> str:
            line = doc.line_of(p)
            return f"{name}:{line}: {p}: {m}" if line else f"{name}: {p}: {m}"

        raise ConfigError(fmt(p, m) for p, m in errors)
    assert config is not None
    return config

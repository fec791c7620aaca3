"""The `dns` section: listen addresses, zones, TTL."""

from __future__ import annotations

from appliance.config.checker import Checker, found, join_index, join_key, quote_hint
from appliance.config.types import DnsConfig
from appliance.config.values import check_zone, parse_listen


def read_dns(c: Checker, value: object) -> DnsConfig:
    path = "dns"
    d = c.mapping(value, path, ("enabled", "listen", "zones", "ttl", "cluster_ips"))
    defaults = DnsConfig()
    listen: list[tuple[str, int]] = []
    lp = join_key(path, "listen")
    if isinstance(d.get("listen"), str):
        c.err(lp, f"must be a list of host:port, got a string: write [{d['listen']!r}]")
    else:
        for j, item in enumerate(c.seq(d.get("listen"), lp, "a list of host:port")):
            if not isinstance(item, str):
                c.err(join_index(lp, j), f"must be host:port, got {found(item)}")
                continue
            hp, problem = parse_listen(item)
            if hp is None:
                c.err(join_index(lp, j), problem or "invalid")
            elif hp in listen:
                c.err(join_index(lp, j), f"duplicate listen address {item!r}")
            else:
                listen.append(hp)
    zones: list[str] = []
    zp = join_key(path, "zones")
    for j, z in enumerate(c.seq(d.get("zones"), zp, "a list of zone names")):
        if not isinstance(z, str):
            c.err(join_index(zp, j), f"must be a zone name, got {found(z)}{quote_hint(z)}")
            continue
        zone = z.lower().removesuffix(".")
        problem = check_zone(zone)
        if problem:
            c.err(join_index(zp, j), f"{z!r} is not a valid DNS name: {problem}")
        elif zone in zones:
            c.err(join_index(zp, j), f"duplicate zone {zone!r}")
        else:
            zones.append(zone)
    enabled = c.boolean(d, "enabled", path, True)
    if enabled and "listen" in d and not d["listen"]:
        c.err(lp, "must not be empty while dns is enabled")
    if enabled and "zones" in d and not d["zones"]:
        c.err(zp, "must not be empty while dns is enabled")
    return DnsConfig(
        enabled=enabled,
        listen=tuple(listen) if "listen" in d else defaults.listen,
        zones=tuple(zones) if "zones" in d else defaults.zones,
        ttl=c.integer(d, "ttl", path, defaults.ttl, 0, 2_147_483_647),
        cluster_ips=c.boolean(d, "cluster_ips", path, False),
    )

"""Single values of appliance.yaml: durations, address ranges, listen addresses and the
names DNS, Kubernetes and Linux accept.

Each parse_* function returns the value or None (with the reason where there are several);
`config.checker.Checker` turns them into `<path>: <message>` errors.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import cast

from appliance.address import IPRange, parse_ip
from appliance.model import Family

FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")
# A Kubernetes name (namespace, pool): a DNS-1123 label.
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

_DNS_LABEL = re.compile(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def fmt_seconds(seconds: float) -> str:
    if seconds and abs(seconds) < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    return f"{round(seconds, 3):g}s"


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like '100ms', '1.5s', '5m', '1m30s'; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or _DURATION_PART.sub("", text):
            return None
        seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


# --- addresses ----------------------------------------------------------------------------


def parse_range(text: str) -> tuple[IPRange | None, str | None]:
    """A CIDR, a single address or 'first-last' -> (inclusive range, None) or (None, why)."""
    bad = f"{text!r} is not an IP network or range"
    if "/" in text:
        try:
            net = ipaddress.ip_network(text.strip(), strict=True)
        except ValueError:
            try:
                meant = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                return None, bad
            return None, f"{text!r} has host bits set (did you mean '{meant}'?)"
        return cast(IPRange, (net.network_address, net.broadcast_address)), None
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = parse_ip(first_text.strip()), parse_ip(last_text.strip())
        if first is None or last is None:
            return None, bad
        if first.version != last.version:
            return None, f"{text!r} mixes IPv4 and IPv6"
        if int(first) > int(last):
            return None, f"{text!r}: the first address is after the last"
        return cast(IPRange, (first, last)), None
    addr = parse_ip(text.strip())
    if addr is None:
        return None, bad
    return cast(IPRange, (addr, addr)), None


def fmt_range(r: IPRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def parse_listen(text: str) -> tuple[tuple[str, int] | None, str | None]:
    """'host:port' or '[v6]:port' -> ((canonical host, port), None) or (None, why)."""
    bad = f"{text!r} is not host:port (an IP address and a port; IPv6 in brackets)"
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            return None, bad
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            return None, bad
    addr = parse_ip(host.strip())
    if addr is None:
        return None, f"{text!r}: {host!r} is not an IP address"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        return None, f"{text!r}: the port must be from 1 to 65535"
    return (str(addr), int(port_text)), None


def check_ifname(name: str) -> str | None:
    # The kernel's dev_valid_name(): IFNAMSIZ is 16 with the NUL.
    if len(name) > 15 or name in (".", "..") or any(c in name for c in "/: \t\n"):
        return (
            f"{name!r} is not a network interface name"
            " (at most 15 characters, no '/', ':' or spaces)"
        )
    return None


def check_zone(text: str) -> str | None:
    if len(text) > 253:
        return "is longer than 253 characters"
    for label in text.split("."):
        if not label:
            return "has an empty label"
        if len(label) > 63:
            return f"label {label!r} is longer than 63 characters"
        if not _DNS_LABEL.fullmatch(label):
            return f"label {label!r} may hold only letters, digits, '-' and '_'"
    return None


def check_label_key(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or check_zone(prefix.lower()) or len(prefix) > 253):
        return f"{key!r} has an invalid prefix (a DNS subdomain before '/')"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"{key!r} is not a valid label key"
    return None


def check_label_value(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"{value!r} is not a valid label value"
    return None

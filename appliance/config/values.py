"""Reading single values of appliance.yaml: the checker that collects errors, durations,
addresses, listen addresses and the names DNS, Kubernetes and Linux accept.

Each parse_* function returns the value or None (with the reason where there are several);
`Checker` turns them into `<path>: <message>` errors and keeps going with a default.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar, cast

from appliance.config_types import IPRange

T = TypeVar("T")
Errors = list[tuple[str, str]]  # (path, message)
_DNS_LABEL = re.compile(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_PLAIN_KEY = re.compile(r"[\w./-]+")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- paths and descriptions ---------------------------------------------------------------


def join_key(path: str, key: str) -> str:
    # A key that would break the one-line format (or look like path syntax) is quoted.
    if not _PLAIN_KEY.fullmatch(key):
        key = repr(key)
    return f"{path}.{key}" if path else key


def join_index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def found(value: object) -> str:
    """What a value is, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return f"a date ({value})"  # YAML reads 2024-01-01 as a date
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def quote_hint(value: object) -> str:
    if isinstance(value, bool):
        return " (quote it: YAML reads yes/no/on/off/true/false as booleans)"
    if isinstance(value, int | float | date):
        return " (quote it)"
    return ""


def fmt_seconds(seconds: float) -> str:
    if seconds and abs(seconds) < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    return f"{round(seconds, 3):g}s"


def camel_to_snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def suggest(word: str, choices: Sequence[str]) -> str | None:
    snake = camel_to_snake(word)
    if snake in choices:
        return snake
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1)
        close = [c for c in choices if close and c.lower() == close[0]]
    return close[0] if close else None


# --- the checker --------------------------------------------------------------------------


@dataclass
class Checker:
    """Collects errors while reading one document. Every method returns a usable value
    (the default when the input is bad) so checking continues and reports everything."""

    errors: Errors
    base_dir: Path | None = None

    def err(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def mapping(
        self,
        value: object,
        path: str,
        allowed: Sequence[str],
        what: str = "a mapping",
        *,
        nullable: bool = True,
    ) -> dict[str, Any]:
        """A mapping with only `allowed` keys; null counts as empty where `nullable`."""
        if value is None and nullable:
            return {}
        if not isinstance(value, dict):
            self.err(path or "(top level)", f"must be {what}, got {found(value)}")
            return {}
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                self.err(path or "(top level)", f"key {short(k)} is not a known key")
                continue
            if k not in allowed:
                hint = suggest(k, allowed)
                more = (
                    f"did you mean {hint!r}?" if hint else f"expected one of: {', '.join(allowed)}"
                )
                self.err(join_key(path, k), f"unknown key ({more})")
                continue
            out[k] = v
        return out

    def seq(self, value: object, path: str, what: str = "a list") -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(path, f"must be {what}, got {found(value)}")
            return []
        return value

    def boolean(self, d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in d:
            return default
        v = d[key]
        if isinstance(v, bool):
            return v
        if isinstance(v, str):
            self.err(
                join_key(path, key),
                f"must be true or false, got a string ({short(v)}): write true or false "
                "without quotes",
            )
        else:
            self.err(join_key(path, key), f"must be true or false, got {found(v)}")
        return default

    def integer(
        self, d: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int
    ) -> int:
        if key not in d:
            return default
        v = d[key]
        what = f"must be an integer from {lo} to {hi}"
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(join_key(path, key), f"{what}, got {found(v)}")
            return default
        if not lo <= v <= hi:
            self.err(join_key(path, key), f"{what}, got {v}")
            return default
        return v

    def string(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: T,
        *,
        nullable: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | T:
        """A non-empty string; `check` returns an error message or None."""
        if key not in d:
            return default
        v = d[key]
        if v is None and nullable:
            return default
        if not isinstance(v, str):
            self.err(join_key(path, key), f"must be a string, got {found(v)}{quote_hint(v)}")
            return default
        if not v:
            self.err(join_key(path, key), "must not be empty")
            return default
        problem = check(v) if check else None
        if problem:
            self.err(join_key(path, key), problem)
            return default
        return v

    def choice(
        self, d: Mapping[str, Any], key: str, path: str, default: str, choices: Sequence[str]
    ) -> str:
        if key not in d:
            return default
        v = d[key]
        what = f"must be one of {', '.join(choices)}"
        if not isinstance(v, str):
            self.err(join_key(path, key), f"{what}, got {found(v)}")
            return default
        if v not in choices:
            hint = suggest(v, choices)
            self.err(
                join_key(path, key),
                f"{what}, got {v!r}" + (f" (did you mean {hint!r}?)" if hint else ""),
            )
            return default
        return v

    def duration(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        lo: float = 0.0,
        hi: float = 31_536_000.0,
    ) -> float:
        if key not in d:
            return default
        v = d[key]
        seconds = parse_duration(v)
        if seconds is None:
            self.err(
                join_key(path, key),
                "must be a duration (seconds, or a string like '100ms', '2s', '1.5s', '5m'),"
                f" got {found(v)}",
            )
            return default
        if not lo <= seconds <= hi:
            self.err(
                join_key(path, key),
                f"must be from {fmt_seconds(lo)} to {fmt_seconds(hi)}, got {fmt_seconds(seconds)}",
            )
            return default
        return seconds


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


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return None  # a zone index (fe80::1%eth0) means nothing in a pool or a peer list
    return addr


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
        first, last = parse_ip(first_text), parse_ip(last_text)
        if first is None or last is None:
            return None, bad
        if first.version != last.version:
            return None, f"{text!r} mixes IPv4 and IPv6"
        if int(first) > int(last):
            return None, f"{text!r}: the first address is after the last"
        return cast(IPRange, (first, last)), None
    addr = parse_ip(text)
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
    addr = parse_ip(host)
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

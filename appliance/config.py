"""appliance.yaml -> `Config`: parse, validate, report every problem at once.

Every error is one line, `<path>: <message>`, where path is the place in the YAML
(`pools[1].addresses[0]`). `load_config` adds `<file>:<line>:` in front, found from the
YAML node tree, and also rejects duplicate keys (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

from appliance.config_types import (
    ClusterConfig,
    Config,
    DataplaneConfig,
    DnsConfig,
    HaConfig,
    HealthConfig,
    IPRange,
    LabelRequirement,
    LabelSelector,
    Pool,
    VrrpInstance,
    WebConfig,
)
from appliance.model import SCHEDULERS, Family

__all__ = ["ConfigError", "load_config", "parse_config"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

T = TypeVar("T")
Errors = list[tuple[str, str]]  # (path, message)

FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")
BACKENDS = ("ipvs", "nftables", "auto")
FORWARDINGS = ("nat", "dr", "tun")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_PASSWORD_FILE = 4096
MAX_FAST_NESTING = 10_000
MAX_DEPTH = 12  # the deepest path: pools[].service_selector.match_expressions[].values[]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_PLAIN_KEY = re.compile(r"[\w./-]+")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """The configuration is unusable; `errors` has every reason, one line each."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- paths and descriptions ---------------------------------------------------------------


def _key(path: str, key: str) -> str:
    # A key that would break the one-line format (or look like path syntax) is quoted.
    if not _PLAIN_KEY.fullmatch(key):
        key = repr(key)
    return f"{path}.{key}" if path else key


def _idx(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _found(value: object) -> str:
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
        return f"a string ({_short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return f"a date ({value})"  # YAML reads 2024-01-01 as a date
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def _quote_hint(value: object) -> str:
    if isinstance(value, bool):
        return " (quote it: YAML reads yes/no/on/off/true/false as booleans)"
    if isinstance(value, int | float | date):
        return " (quote it)"
    return ""


def _fmt_seconds(seconds: float) -> str:
    if seconds and abs(seconds) < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    return f"{round(seconds, 3):g}s"


def _camel_to_snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    snake = _camel_to_snake(word)
    if snake in choices:
        return snake
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1)
        close = [c for c in choices if close and c.lower() == close[0]]
    return close[0] if close else None


# --- the checker --------------------------------------------------------------------------


@dataclass
class _Checker:
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
            self.err(path or "(top level)", f"must be {what}, got {_found(value)}")
            return {}
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                self.err(path or "(top level)", f"key {_short(k)} is not a known key")
                continue
            if k not in allowed:
                hint = _suggest(k, allowed)
                more = (
                    f"did you mean {hint!r}?" if hint else f"expected one of: {', '.join(allowed)}"
                )
                self.err(_key(path, k), f"unknown key ({more})")
                continue
            out[k] = v
        return out

    def seq(self, value: object, path: str, what: str = "a list") -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(path, f"must be {what}, got {_found(value)}")
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
                _key(path, key),
                f"must be true or false, got a string ({_short(v)}): write true or false "
                "without quotes",
            )
        else:
            self.err(_key(path, key), f"must be true or false, got {_found(v)}")
        return default

    def integer(
        self, d: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int
    ) -> int:
        if key not in d:
            return default
        v = d[key]
        what = f"must be an integer from {lo} to {hi}"
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(_key(path, key), f"{what}, got {_found(v)}")
            return default
        if not lo <= v <= hi:
            self.err(_key(path, key), f"{what}, got {v}")
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
            self.err(_key(path, key), f"must be a string, got {_found(v)}{_quote_hint(v)}")
            return default
        if not v:
            self.err(_key(path, key), "must not be empty")
            return default
        problem = check(v) if check else None
        if problem:
            self.err(_key(path, key), problem)
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
            self.err(_key(path, key), f"{what}, got {_found(v)}")
            return default
        if v not in choices:
            hint = _suggest(v, choices)
            self.err(
                _key(path, key),
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
                _key(path, key),
                "must be a duration (seconds, or a string like '100ms', '2s', '1.5s', '5m'),"
                f" got {_found(v)}",
            )
            return default
        if not lo <= seconds <= hi:
            self.err(
                _key(path, key),
                f"must be from {_fmt_seconds(lo)} to {_fmt_seconds(hi)},"
                f" got {_fmt_seconds(seconds)}",
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


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
        first, last = _ip(first_text), _ip(last_text)
        if first is None or last is None:
            return None, bad
        if first.version != last.version:
            return None, f"{text!r} mixes IPv4 and IPv6"
        if int(first) > int(last):
            return None, f"{text!r}: the first address is after the last"
        return cast(IPRange, (first, last)), None
    addr = _ip(text)
    if addr is None:
        return None, bad
    return cast(IPRange, (addr, addr)), None


def _fmt_range(r: IPRange) -> str:
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
    addr = _ip(host)
    if addr is None:
        return None, f"{text!r}: {host!r} is not an IP address"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        return None, f"{text!r}: the port must be from 1 to 65535"
    return (str(addr), int(port_text)), None


def _check_ifname(name: str) -> str | None:
    # The kernel's dev_valid_name(): IFNAMSIZ is 16 with the NUL.
    if len(name) > 15 or name in (".", "..") or any(c in name for c in "/: \t\n"):
        return (
            f"{name!r} is not a network interface name"
            " (at most 15 characters, no '/', ':' or spaces)"
        )
    return None


def _check_zone(text: str) -> str | None:
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


def _check_label_key(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or _check_zone(prefix.lower()) or len(prefix) > 253):
        return f"{key!r} has an invalid prefix (a DNS subdomain before '/')"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"{key!r} is not a valid label key"
    return None


def _check_label_value(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"{value!r} is not a valid label value"
    return None


# --- sections -----------------------------------------------------------------------------


def _resolve(c: _Checker, path_text: str) -> str:
    if c.base_dir is None or os.path.isabs(path_text):
        return path_text
    return str(c.base_dir / path_text)


def _cluster(c: _Checker, value: object) -> ClusterConfig:
    path = "cluster"
    d = c.mapping(
        value, path, ("manifests", "kubeconfig", "load_balancer_class", "default_ip_family")
    )
    manifests = c.string(d, "manifests", path, None, nullable=True)
    kubeconfig = c.string(d, "kubeconfig", path, None, nullable=True)
    if manifests is not None and kubeconfig is not None:
        c.err(path, "set manifests or kubeconfig, not both")
    elif (
        d.get("manifests") is None
        and d.get("kubeconfig") is None
        and isinstance(value, dict | None)
    ):
        c.err(path, "set manifests (a folder of YAML files) or kubeconfig (or 'in-cluster')")
    if manifests is not None:
        manifests = _resolve(c, manifests)
    if kubeconfig is not None and kubeconfig != "in-cluster":
        kubeconfig = _resolve(c, kubeconfig)
    return ClusterConfig(
        manifests=manifests,
        kubeconfig=kubeconfig,
        load_balancer_class=c.string(d, "load_balancer_class", path, None, nullable=True),
        default_ip_family=cast(Family, c.choice(d, "default_ip_family", path, "IPv4", FAMILIES)),
    )


def _selector(c: _Checker, value: object, path: str) -> LabelSelector:
    d = c.mapping(value, path, ("match_labels", "match_expressions"))
    labels: list[tuple[str, str]] = []
    ml_path = _key(path, "match_labels")
    raw_labels = d.get("match_labels")
    if raw_labels is not None and not isinstance(raw_labels, dict):
        c.err(ml_path, f"must be a mapping of label to value, got {_found(raw_labels)}")
    elif raw_labels:
        for k, v in raw_labels.items():
            if not isinstance(k, str):
                c.err(ml_path, f"label key {_short(k)} must be a string{_quote_hint(k)}")
                continue
            kp = _key(ml_path, k)
            if not isinstance(v, str):
                c.err(kp, f"must be a string, got {_found(v)}{_quote_hint(v)}")
                continue
            problem = _check_label_key(k) or _check_label_value(v)
            if problem:
                c.err(kp, problem)
                continue
            labels.append((k, v))
    requirements: list[LabelRequirement] = []
    me_path = _key(path, "match_expressions")
    for i, item in enumerate(c.seq(d.get("match_expressions"), me_path)):
        ip = _idx(me_path, i)
        e = c.mapping(item, ip, ("key", "operator", "values"), nullable=False)
        if not isinstance(item, dict):
            continue
        key = c.string(e, "key", ip, None, check=_check_label_key)
        if "key" not in e:
            c.err(_key(ip, "key"), "required")
        if "operator" not in e:
            c.err(_key(ip, "operator"), f"required: one of {', '.join(OPERATORS)}")
        operator = c.choice(e, "operator", ip, "", OPERATORS)
        values: list[str] = []
        vp = _key(ip, "values")
        for j, v in enumerate(c.seq(e.get("values"), vp)):
            if not isinstance(v, str):
                c.err(_idx(vp, j), f"must be a string, got {_found(v)}{_quote_hint(v)}")
            elif problem := _check_label_value(v):
                c.err(_idx(vp, j), problem)
            else:
                values.append(v)
        if operator in ("In", "NotIn") and "values" in e and not e["values"]:
            c.err(vp, f"must not be empty with operator {operator}")
        elif operator in ("In", "NotIn") and "values" not in e:
            c.err(vp, f"required with operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and e.get("values"):
            c.err(vp, f"must be empty with operator {operator}")
        if key is not None and operator:
            requirements.append(
                LabelRequirement(
                    key=key,
                    operator=cast(Literal["In", "NotIn", "Exists", "DoesNotExist"], operator),
                    values=tuple(values),
                )
            )
    return LabelSelector(match_labels=tuple(labels), match_expressions=tuple(requirements))


@dataclass(frozen=True)
class _Placed:
    """A range and where it came from, to name both sides of an overlap."""

    range: IPRange
    pool: str
    index: int
    path: str
    text: str


def _pools(c: _Checker, value: object) -> tuple[Pool, ...]:
    if value is None:
        c.err("pools", "required: at least one address pool")
        return ()
    items = c.seq(value, "pools", "a list of pools")
    if isinstance(value, list) and not value:
        c.err("pools", "must have at least one pool")
    pools: list[Pool] = []
    seen: dict[str, str] = {}
    placed: list[_Placed] = []
    allowed = (
        "name",
        "addresses",
        "auto_assign",
        "avoid_buggy_ips",
        "namespaces",
        "service_selector",
    )
    for i, item in enumerate(items):
        path = _idx("pools", i)
        d = c.mapping(item, path, allowed, nullable=False)
        if not isinstance(item, dict):
            continue
        name = c.string(
            d,
            "name",
            path,
            None,
            check=lambda s: (
                None
                if len(s) <= 63 and _NAME.fullmatch(s)
                else f"{s!r} is not a valid pool name (lower-case letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit)"
            ),
        )
        if "name" not in d:
            c.err(_key(path, "name"), "required")
        elif name is not None:
            if name in seen:
                c.err(_key(path, "name"), f"duplicate pool name {name!r} (also {seen[name]})")
            else:
                seen[name] = path
        ranges: list[IPRange] = []
        ap = _key(path, "addresses")
        if "addresses" not in d:
            c.err(ap, "required: CIDRs, addresses or first-last ranges")
        elif d["addresses"] is not None and not isinstance(d["addresses"], list):
            c.err(ap, f"must be a list of CIDRs or ranges, got {_found(d['addresses'])}")
        elif not d["addresses"]:
            c.err(ap, "must not be empty")
        else:
            for j, a in enumerate(d["addresses"]):
                aj = _idx(ap, j)
                if not isinstance(a, str):
                    c.err(aj, f"must be a CIDR, an address or a range, got {_found(a)}")
                    continue
                r, problem = parse_range(a)
                if r is None:
                    c.err(aj, problem or "invalid")
                    continue
                ranges.append(r)
                placed.append(_Placed(r, name or f"#{i}", i, aj, a))
        namespaces: list[str] = []
        np_ = _key(path, "namespaces")
        for j, ns in enumerate(c.seq(d.get("namespaces"), np_, "a list of namespaces")):
            if not isinstance(ns, str):
                c.err(_idx(np_, j), f"must be a string, got {_found(ns)}{_quote_hint(ns)}")
            elif len(ns) > 63 or not _NAME.fullmatch(ns):
                c.err(_idx(np_, j), f"{ns!r} is not a valid namespace name")
            elif ns in namespaces:
                c.err(_idx(np_, j), f"duplicate namespace {ns!r}")
            else:
                namespaces.append(ns)
        selector = _selector(c, d.get("service_selector"), _key(path, "service_selector"))
        pools.append(
            Pool(
                name=name or "",
                ranges=tuple(ranges),
                auto_assign=c.boolean(d, "auto_assign", path, True),
                avoid_buggy_ips=c.boolean(d, "avoid_buggy_ips", path, False),
                namespaces=tuple(namespaces),
                service_selector=selector,
            )
        )
    _overlaps(c, placed)
    return tuple(pools)


def _overlaps(c: _Checker, placed: list[_Placed]) -> None:
    # Sweep in address order; each range is compared to the one reaching furthest so far,
    # which finds every range that overlaps some earlier one.
    order = sorted(placed, key=lambda p: (p.range[0].version, int(p.range[0]), p.path))
    reach: _Placed | None = None
    for p in order:
        if (
            reach is not None
            and reach.range[0].version == p.range[0].version
            and int(p.range[0]) <= int(reach.range[1])
        ):
            last = min(int(p.range[1]), int(reach.range[1]))
            both = cast(IPRange, (p.range[0], ipaddress.ip_address(last)))
            later, earlier = sorted((p, reach), key=lambda x: _path_order(x.path), reverse=True)
            where = (
                f"pool {earlier.pool!r} ({earlier.path} {earlier.text!r})"
                if earlier.index != later.index
                else f"{earlier.path} {earlier.text!r} of the same pool"
            )
            c.err(later.path, f"{later.text!r} overlaps {where} in {_fmt_range(both)}")
        if reach is None or (
            reach.range[0].version != p.range[0].version or int(p.range[1]) > int(reach.range[1])
        ):
            reach = p


def _path_order(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\[(\d+)\]", path))


def _dataplane(c: _Checker, value: object) -> DataplaneConfig:
    path = "dataplane"
    d = c.mapping(value, path, ("backend", "forwarding", "scheduler", "drain_timeout"))
    return DataplaneConfig(
        backend=cast(Any, c.choice(d, "backend", path, "auto", BACKENDS)),
        forwarding=cast(Any, c.choice(d, "forwarding", path, "nat", FORWARDINGS)),
        scheduler=c.choice(d, "scheduler", path, "rr", SCHEDULERS),
        drain_timeout=c.duration(d, "drain_timeout", path, 300.0, 0.0, 86400.0),
    )


def _advert_interval(c: _Checker, d: Mapping[str, Any], path: str) -> float:
    seconds = c.duration(d, "advert_interval", path, 1.0, 0.01, 40.95)
    centis = seconds * 100
    if abs(centis - round(centis)) > 1e-6:
        c.err(
            _key(path, "advert_interval"),
            "must be whole centiseconds (VRRPv3 counts in units of 10ms), "
            f"got {_fmt_seconds(seconds)}",
        )
        return 1.0
    return round(centis) / 100


def _ha(c: _Checker, value: object, pools: Sequence[Pool]) -> HaConfig:
    path = "ha"
    d = c.mapping(
        value, path, ("interface", "garp_count", "garp_interval", "garp_refresh", "instances")
    )
    interface = c.string(d, "interface", path, None, nullable=True, check=_check_ifname)
    pool_names = list(dict.fromkeys(p.name for p in pools if p.name))
    instances: list[VrrpInstance] = []
    names: dict[str, str] = {}
    vrids: dict[tuple[str, int], str] = {}
    owners: dict[tuple[str, str], str] = {}  # (family, pool) -> instance path
    ip_ = _key(path, "instances")
    items = c.seq(d.get("instances"), ip_, "a list of VRRP instances")
    if items and d.get("interface") is None:
        c.err(ip_, "VRRP instances need ha.interface (the interface the adverts go out on)")
    for i, item in enumerate(items):
        p = _idx(ip_, i)
        e = c.mapping(
            item,
            p,
            (
                "name",
                "vrid",
                "priority",
                "advert_interval",
                "preempt",
                "preempt_delay",
                "family",
                "pools",
                "unicast_peers",
                "v3_checksum_as_v2",
            ),
            nullable=False,
        )
        if not isinstance(item, dict):
            continue
        name = c.string(
            e,
            "name",
            p,
            None,
            check=lambda s: (
                None
                if len(s) <= 63 and _INSTANCE_NAME.fullmatch(s)
                else f"{s!r} is not a valid instance name (letters, digits, '-', '_', '.')"
            ),
        )
        if "name" not in e:
            c.err(_key(p, "name"), "required")
        elif name is not None:
            if name in names:
                c.err(_key(p, "name"), f"duplicate instance name {name!r} (also {names[name]})")
            else:
                names[name] = p
        family = cast(Family, c.choice(e, "family", p, "IPv4", FAMILIES))
        if "vrid" not in e:
            c.err(_key(p, "vrid"), "required: an integer from 1 to 255")
        vrid = c.integer(e, "vrid", p, 0, 1, 255)
        if vrid:
            if (family, vrid) in vrids:
                c.err(
                    _key(p, "vrid"),
                    f"duplicate VRID {vrid} for {family} (also {vrids[(family, vrid)]})",
                )
            else:
                vrids[(family, vrid)] = p
        priority = c.integer(e, "priority", p, 100, 1, 255)
        if priority == 255:
            c.err(
                _key(p, "priority"),
                "must be an integer from 1 to 254, got 255 (255 means the address owner,"
                " which a VIP holder never is)",
            )
            priority = 100
        owned: list[str] = []
        pp = _key(p, "pools")
        for j, pn in enumerate(c.seq(e.get("pools"), pp, "a list of pool names")):
            if not isinstance(pn, str):
                c.err(_idx(pp, j), f"must be a pool name, got {_found(pn)}")
            elif pn not in pool_names:
                hint = _suggest(pn, pool_names)
                known = f"did you mean {hint!r}?" if hint else f"pools: {', '.join(pool_names)}"
                c.err(_idx(pp, j), f"no pool named {pn!r} ({known})")
            elif pn in owned:
                c.err(_idx(pp, j), f"pool {pn!r} is listed twice")
            else:
                owned.append(pn)
                _own(c, owners, family, pn, _idx(pp, j), name)
        if not e.get("pools"):
            for pn in pool_names:
                _own(c, owners, family, pn, pp, name, every=True)
        peers: list[str] = []
        up = _key(p, "unicast_peers")
        for j, peer in enumerate(c.seq(e.get("unicast_peers"), up, "a list of addresses")):
            addr = _ip(peer) if isinstance(peer, str) else None
            if addr is None:
                c.err(_idx(up, j), f"must be an IP address, got {_found(peer)}")
            elif f"IPv{addr.version}" != family:
                c.err(_idx(up, j), f"{peer!r} is IPv{addr.version}, the instance is {family}")
            elif str(addr) in peers:
                c.err(_idx(up, j), f"duplicate peer {peer!r}")
            else:
                peers.append(str(addr))
        as_v2 = c.boolean(e, "v3_checksum_as_v2", p, False)
        if as_v2 and family != "IPv4":
            c.err(_key(p, "v3_checksum_as_v2"), "applies only to IPv4 instances")
            as_v2 = False
        instances.append(
            VrrpInstance(
                name=name or "",
                vrid=vrid,
                priority=priority,
                advert_interval=_advert_interval(c, e, p),
                preempt=c.boolean(e, "preempt", p, True),
                preempt_delay=c.duration(e, "preempt_delay", p, 0.0, 0.0, 3600.0),
                pools=tuple(owned),
                unicast_peers=tuple(peers),
                family=family,
                v3_checksum_as_v2=as_v2,
            )
        )
    return HaConfig(
        interface=interface,
        instances=tuple(instances),
        garp_count=c.integer(d, "garp_count", path, 5, 0, 1000),
        garp_interval=c.duration(d, "garp_interval", path, 0.02, 0.0, 60.0),
        garp_refresh=c.duration(d, "garp_refresh", path, 0.0, 0.0, 86400.0),
    )


def _own(
    c: _Checker,
    owners: dict[tuple[str, str], str],
    family: str,
    pool: str,
    path: str,
    name: str | None,
    every: bool = False,
) -> None:
    if (family, pool) in owners:
        how = " (no pools listed means every pool)" if every else ""
        c.err(
            path,
            f"pool {pool!r} is already owned by {family} instance {owners[(family, pool)]}{how}",
        )
    else:
        owners[(family, pool)] = f"{name!r}" if name else path


def _dns(c: _Checker, value: object) -> DnsConfig:
    path = "dns"
    d = c.mapping(value, path, ("enabled", "listen", "zones", "ttl", "cluster_ips"))
    defaults = DnsConfig()
    listen: list[tuple[str, int]] = []
    lp = _key(path, "listen")
    if isinstance(d.get("listen"), str):
        c.err(lp, f"must be a list of host:port, got a string: write [{d['listen']!r}]")
    else:
        for j, item in enumerate(c.seq(d.get("listen"), lp, "a list of host:port")):
            if not isinstance(item, str):
                c.err(_idx(lp, j), f"must be host:port, got {_found(item)}")
                continue
            hp, problem = parse_listen(item)
            if hp is None:
                c.err(_idx(lp, j), problem or "invalid")
            elif hp in listen:
                c.err(_idx(lp, j), f"duplicate listen address {item!r}")
            else:
                listen.append(hp)
    zones: list[str] = []
    zp = _key(path, "zones")
    for j, z in enumerate(c.seq(d.get("zones"), zp, "a list of zone names")):
        if not isinstance(z, str):
            c.err(_idx(zp, j), f"must be a zone name, got {_found(z)}{_quote_hint(z)}")
            continue
        zone = z.lower().removesuffix(".")
        problem = _check_zone(zone)
        if problem:
            c.err(_idx(zp, j), f"{z!r} is not a valid DNS name: {problem}")
        elif zone in zones:
            c.err(_idx(zp, j), f"duplicate zone {zone!r}")
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


def _health(c: _Checker, value: object) -> HealthConfig:
    path = "health"
    d = c.mapping(value, path, ("enabled", "interval", "timeout", "rise", "fall"))
    interval = c.duration(d, "interval", path, 2.0, 0.01, 3600.0)
    timeout = c.duration(d, "timeout", path, 1.0, 0.001, 3600.0)
    if timeout >= interval and ("timeout" in d or "interval" in d):
        c.err(
            _key(path, "timeout"),
            f"must be shorter than health.interval ({_fmt_seconds(interval)}),"
            f" got {_fmt_seconds(timeout)}",
        )
    return HealthConfig(
        enabled=c.boolean(d, "enabled", path, True),
        interval=interval,
        timeout=timeout,
        rise=c.integer(d, "rise", path, 2, 1, 1000),
        fall=c.integer(d, "fall", path, 3, 1, 1000),
    )


def _read_password(c: _Checker, path: str, file_text: str) -> str | None:
    where = _resolve(c, file_text)
    try:
        st = os.stat(where)
        if not stat.S_ISREG(st.st_mode):
            c.err(path, f"{where!r} is not a regular file")
            return None
        if st.st_size > MAX_PASSWORD_FILE:
            c.err(path, f"{where!r} is too large for a password file")
            return None
        with open(where, "rb") as f:
            raw = f.read(MAX_PASSWORD_FILE + 1)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        c.err(path, f"cannot read {where!r}: {reason}")
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        c.err(path, f"{where!r} is not UTF-8 text")
        return None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password:
        c.err(path, f"{where!r} must hold the password on one line")
        return None
    return password


def _web(c: _Checker, value: object) -> WebConfig:
    path = "web"
    d = c.mapping(value, path, ("listen", "basic_auth"))
    listen = WebConfig().listen
    if "listen" in d:
        v = d["listen"]
        if not isinstance(v, str):
            c.err(_key(path, "listen"), f"must be host:port, got {_found(v)}")
        else:
            hp, problem = parse_listen(v)
            if hp is None:
                c.err(_key(path, "listen"), problem or "invalid")
            else:
                listen = hp
    ap = _key(path, "basic_auth")
    a = c.mapping(d.get("basic_auth"), ap, ("username", "password", "password_file"))
    username = c.string(
        a,
        "username",
        ap,
        None,
        check=lambda s: "must not contain ':' (HTTP basic auth splits on it)" if ":" in s else None,
    )
    password = c.string(a, "password", ap, None)
    password_file = c.string(a, "password_file", ap, None)
    if "password" in a and "password_file" in a:
        c.err(ap, "set password or password_file, not both")
        password = None
    elif password_file is not None:
        password = _read_password(c, _key(ap, "password_file"), password_file)
    has_pass = "password" in a or "password_file" in a
    if "username" in a and not has_pass:
        c.err(ap, "username needs password or password_file")
    elif has_pass and "username" not in a:
        c.err(ap, "password needs username")
    if username is None or password is None:
        username = password = None
    return WebConfig(listen=listen, username=username, password=password)


_SECTIONS = ("cluster", "pools", "dataplane", "ha", "dns", "health", "web")


def _parse(data: object, source: str, base_dir: Path | None) -> tuple[Config | None, Errors]:
    errors: Errors = []
    c = _Checker(errors, base_dir)
    if data is None:
        c.err("(top level)", "the configuration is empty")
        return None, errors
    top = c.mapping(data, "", _SECTIONS, "a mapping of sections (cluster, pools, ...)")
    if not isinstance(data, dict):
        return None, errors
    pools = _pools(c, top.get("pools"))
    config = Config(
        pools=pools,
        cluster=_cluster(c, top.get("cluster")),
        dataplane=_dataplane(c, top.get("dataplane")),
        ha=_ha(c, top.get("ha"), pools),
        dns=_dns(c, top.get("dns")),
        health=_health(c, top.get("health")),
        web=_web(c, top.get("web")),
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


def _node_lines(node: yaml.Node | None, errors: Errors) -> dict[str, int]:
    """Path -> 1-based line of every node, and an error for every duplicate key."""
    lines: dict[str, int] = {}
    seen: set[int] = set()

    def walk(n: yaml.Node, path: str, depth: int = 0) -> None:
        # Nothing the checker reads is deeper than MAX_DEPTH; stopping there keeps a
        # hostile nesting from exhausting the stack.
        if id(n) in seen or depth > MAX_DEPTH:  # seen: an alias, mapped at its anchor
            return
        seen.add(id(n))
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            keys: dict[str, int] = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or k.value == "<<":
                    continue
                kp = _key(path, str(k.value))
                line = k.start_mark.line + 1
                if k.value in keys:
                    errors.append((kp, f"duplicate key (also on line {keys[k.value]})"))
                else:
                    keys[k.value] = line
                lines[kp] = line
                walk(v, kp, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, _idx(path, i), depth + 1)

    if node is not None:
        walk(node, "")
    return lines


def _line_of(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        shorter = re.sub(r"(\[\d+\]|\.?[^.\[]*)$", "", path)
        if shorter == path:
            return None
        path = shorter
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _loader_for(raw: bytes) -> Any:
    """libyaml composes nested nodes by C recursion, so a hostile nesting crashes the whole
    process (200,000 levels segfault). Every level needs one of these characters: below the
    bound libyaml is safe; above it the pure-Python loader fails with RecursionError."""
    if sum(raw.count(c) for c in (b"[", b"{", b"-", b":", b"?")) <= MAX_FAST_NESTING:
        return _Loader
    return yaml.SafeLoader


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate appliance.yaml; every error line starts with `<file>:<line>:`."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([f"{name}: cannot read: {e.strerror or e}"]) from None
    loader = _loader_for(raw)(raw)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        context = f" ({_one_line(e.context)})" if e.context else ""
        problem = _one_line(e.problem or "")
        raise ConfigError([f"{where}: invalid YAML: {problem}{context}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: invalid YAML: nested too deeply"]) from None
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError([f"{name}: invalid YAML: {_one_line(str(e))}"]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError([f"{name}: the file is empty (or only comments)"])
    dup_errors: Errors = []
    lines = _node_lines(node, dup_errors)
    config, errors = _parse(data, name, Path(name).resolve().parent)
    errors = dup_errors + errors
    if errors:

        def fmt(p: str, m: str) -> str:
            line = _line_of(p, lines)
            return f"{name}:{line}: {p}: {m}" if line else f"{name}: {p}: {m}"

        raise ConfigError(fmt(p, m) for p, m in errors)
    assert config is not None
    return config

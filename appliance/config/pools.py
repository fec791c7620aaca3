"""The `pools` section: address pools, their selectors, and ranges that overlap."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from appliance.address import IPRange
from appliance.config.checker import Checker, found, join_index, join_key, quote_hint, short
from appliance.config.types import LabelRequirement, LabelSelector, Pool
from appliance.config.values import (
    NAME,
    check_label_key,
    check_label_value,
    fmt_range,
    parse_range,
)

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POOL_KEYS = (
    "name",
    "addresses",
    "auto_assign",
    "avoid_buggy_ips",
    "namespaces",
    "service_selector",
)


def _selector(c: Checker, value: object, path: str) -> LabelSelector:
    d = c.mapping(value, path, ("match_labels", "match_expressions"))
    labels: list[tuple[str, str]] = []
    ml_path = join_key(path, "match_labels")
    raw_labels = d.get("match_labels")
    if raw_labels is not None and not isinstance(raw_labels, dict):
        c.err(ml_path, f"must be a mapping of label to value, got {found(raw_labels)}")
    elif raw_labels:
        for k, v in raw_labels.items():
            if not isinstance(k, str):
                c.err(ml_path, f"label key {short(k)} must be a string{quote_hint(k)}")
                continue
            kp = join_key(ml_path, k)
            if not isinstance(v, str):
                c.err(kp, f"must be a string, got {found(v)}{quote_hint(v)}")
                continue
            problem = check_label_key(k) or check_label_value(v)
            if problem:
                c.err(kp, problem)
                continue
            labels.append((k, v))
    requirements: list[LabelRequirement] = []
    me_path = join_key(path, "match_expressions")
    for i, item in enumerate(c.seq(d.get("match_expressions"), me_path)):
        ip = join_index(me_path, i)
        e = c.mapping(item, ip, ("key", "operator", "values"), nullable=False)
        if not isinstance(item, dict):
            continue
        key = c.string(e, "key", ip, None, check=check_label_key)
        if "key" not in e:
            c.err(join_key(ip, "key"), "required")
        if "operator" not in e:
            c.err(join_key(ip, "operator"), f"required: one of {', '.join(OPERATORS)}")
        operator = c.choice(e, "operator", ip, "", OPERATORS)
        values: list[str] = []
        vp = join_key(ip, "values")
        for j, v in enumerate(c.seq(e.get("values"), vp)):
            if not isinstance(v, str):
                c.err(join_index(vp, j), f"must be a string, got {found(v)}{quote_hint(v)}")
            elif problem := check_label_value(v):
                c.err(join_index(vp, j), problem)
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


def read_pools(c: Checker, value: object) -> tuple[Pool, ...]:
    if value is None:
        c.err("pools", "required: at least one address pool")
        return ()
    items = c.seq(value, "pools", "a list of pools")
    if isinstance(value, list) and not value:
        c.err("pools", "must have at least one pool")
    pools: list[Pool] = []
    seen: dict[str, str] = {}
    placed: list[_Placed] = []
    for i, item in enumerate(items):
        path = join_index("pools", i)
        d = c.mapping(item, path, POOL_KEYS, nullable=False)
        if not isinstance(item, dict):
            continue
        name = _pool_name(c, d, path, seen)
        ranges = _addresses(c, d, path)
        placed.extend(_Placed(r, name or f"#{i}", i, aj, a) for r, aj, a in ranges)
        namespaces = _namespaces(c, d, path)
        selector = _selector(c, d.get("service_selector"), join_key(path, "service_selector"))
        pools.append(
            Pool(
                name=name or "",
                ranges=tuple(r for r, _, _ in ranges),
                auto_assign=c.boolean(d, "auto_assign", path, True),
                avoid_buggy_ips=c.boolean(d, "avoid_buggy_ips", path, False),
                namespaces=namespaces,
                service_selector=selector,
            )
        )
    _overlaps(c, placed)
    return tuple(pools)


def _pool_name(c: Checker, d: dict[str, Any], path: str, seen: dict[str, str]) -> str | None:
    """The pool's name, checked and unique (`seen`: name -> the path that has it)."""
    name = c.string(
        d,
        "name",
        path,
        None,
        check=lambda s: (
            None
            if len(s) <= 63 and NAME.fullmatch(s)
            else f"{s!r} is not a valid pool name (lower-case letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit)"
        ),
    )
    if "name" not in d:
        c.err(join_key(path, "name"), "required")
    elif name is not None:
        if name in seen:
            c.err(join_key(path, "name"), f"duplicate pool name {name!r} (also {seen[name]})")
        else:
            seen[name] = path
    return name


def _addresses(c: Checker, d: dict[str, Any], path: str) -> list[tuple[IPRange, str, str]]:
    """The pool's ranges, each with its path and the text it was written as."""
    ranges: list[tuple[IPRange, str, str]] = []
    ap = join_key(path, "addresses")
    if "addresses" not in d:
        c.err(ap, "required: CIDRs, addresses or first-last ranges")
    elif d["addresses"] is not None and not isinstance(d["addresses"], list):
        c.err(ap, f"must be a list of CIDRs or ranges, got {found(d['addresses'])}")
    elif not d["addresses"]:
        c.err(ap, "must not be empty")
    else:
        for j, a in enumerate(d["addresses"]):
            aj = join_index(ap, j)
            if not isinstance(a, str):
                c.err(aj, f"must be a CIDR, an address or a range, got {found(a)}")
                continue
            r, problem = parse_range(a)
            if r is None:
                c.err(aj, problem or "invalid")
                continue
            ranges.append((r, aj, a))
    return ranges


def _namespaces(c: Checker, d: dict[str, Any], path: str) -> tuple[str, ...]:
    namespaces: list[str] = []
    np_ = join_key(path, "namespaces")
    for j, ns in enumerate(c.seq(d.get("namespaces"), np_, "a list of namespaces")):
        if not isinstance(ns, str):
            c.err(join_index(np_, j), f"must be a string, got {found(ns)}{quote_hint(ns)}")
        elif len(ns) > 63 or not NAME.fullmatch(ns):
            c.err(join_index(np_, j), f"{ns!r} is not a valid namespace name")
        elif ns in namespaces:
            c.err(join_index(np_, j), f"duplicate namespace {ns!r}")
        else:
            namespaces.append(ns)
    return tuple(namespaces)


def _overlaps(c: Checker, placed: list[_Placed]) -> None:
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
            c.err(later.path, f"{later.text!r} overlaps {where} in {fmt_range(both)}")
        if reach is None or (
            reach.range[0].version != p.range[0].version or int(p.range[1]) > int(reach.range[1])
        ):
            reach = p


def _path_order(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\[(\d+)\]", path))

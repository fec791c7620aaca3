"""Typed reads of untrusted Kubernetes object fields, each failing with its path.

Objects come from files people edit by hand, so every read checks the type and says
where it was wrong (`spec.ports[1].port: must be 1-65535, got 70000`) instead of
letting a TypeError or KeyError escape. The name rules are the API server's
(k8s.io/apimachinery/pkg/util/validation), the ones users know from kubectl errors.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from appliance.address import parse_ip

T = TypeVar("T", bound=str)


class ManifestError(ValueError):
    """Why an object cannot be used: `<path>: <what is wrong>`."""


_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.ASCII
)
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]{1,15}", re.ASCII)


def show(value: Any) -> str:
    """A value as the user wrote it, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value[:60] + ("..." if len(value) > 60 else ""))
    return type_name(value)


def type_name(value: Any) -> str:
    """JSON's name for the type of a value, the words users see in the manifest."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def fail(path: str, what: str) -> ManifestError:
    return ManifestError(f"{path}: {what}")


def wrong(path: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"{path}: must be {expected}, got {show(value)}")


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    """An object; null or absent reads as empty (the API's zero value)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise wrong(path, "an object", value)
    return value


def items(value: Any, path: str) -> Sequence[Any]:
    """A list; null or absent reads as empty."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise wrong(path, "a list", value)
    return value


def string(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong(path, "a string", value)
    return value


def required_string(value: Any, path: str) -> str:
    text = string(value, path)
    if not text:
        raise fail(path, "required")
    return text


def text(value: Any, path: str) -> str:
    """Bookkeeping fields kept as text (uid, resourceVersion, creationTimestamp).

    A hand-written `resourceVersion: 12` or an unquoted timestamp from a client that
    parsed it is still what the user meant, so numbers and datetimes become text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, datetime.datetime):
        stamp: datetime.datetime = value
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
        return stamp.isoformat(timespec="seconds") + "Z"
    raise wrong(path, "a string", value)


def integer(value: Any, path: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(path, "an integer", value)
    if not low <= value <= high:
        raise fail(path, f"must be {low}-{high}, got {value}")
    return value


def port_number(value: Any, path: str) -> int | None:
    return integer(value, path, 1, 65535)


def boolean(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise wrong(path, "true or false", value)
    return value


def choice(value: Any, path: str, allowed: tuple[T, ...], default: T | None = None) -> T | None:
    """One of a fixed set of words (type, protocol, policy ...)."""
    if value is None or value == "":
        return default
    for word in allowed:
        if value == word:
            return word
    words = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    raise wrong(path, words, value)


def string_map(value: Any, path: str) -> dict[str, str]:
    """labels, annotations, selector: strings to strings, as the API server insists."""
    m = mapping(value, path)
    out: dict[str, str] = {}
    for k, v in m.items():
        if not isinstance(k, str):
            raise fail(path, f"keys must be strings, got {show(k)}")
        if not isinstance(v, str):
            raise wrong(f"{path}[{json.dumps(k)}]", "a string", v)
        out[k] = v
    return out


def dns_label(value: Any, path: str) -> str:
    name = required_string(value, path)
    if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
        raise wrong(path, "a DNS-1123 label (a-z, 0-9 and '-', at most 63)", name)
    return name


def dns1035_label(value: Any, path: str) -> str:
    name = required_string(value, path)
    if len(name) > 63 or not _DNS1035_LABEL.fullmatch(name):
        raise wrong(path, "a DNS-1035 label (a-z, 0-9 and '-', starting with a letter)", name)
    return name


def dns_subdomain(value: Any, path: str, *, wildcard: bool = False) -> str:
    name = required_string(value, path)
    bare = name[2:] if wildcard and name.startswith("*.") else name
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(bare):
        raise wrong(path, "a DNS-1123 subdomain (a-z, 0-9, '-' and '.')", name)
    return name


def port_name(value: Any, path: str) -> str:
    """IANA_SVC_NAME: what a targetPort / containerPort name may be."""
    name = required_string(value, path)
    if (
        not _IANA_SVC_NAME.fullmatch(name)
        or name[0] == "-"
        or name[-1] == "-"
        or "--" in name
        or not any("a" <= c <= "z" for c in name)
    ):
        raise wrong(path, "a port number or an IANA service name (a-z, 0-9, '-', max 15)", name)
    return name


def ip(value: Any, path: str, family: int | None = None) -> str:
    """An IP address in canonical text. Zones (`%eth0`) and leading zeros are refused, as
    the API server refuses them; `family` (4 or 6) restricts it."""
    address = required_string(value, path)
    parsed = parse_ip(address)
    if parsed is None:
        raise wrong(path, "an IP address", address)
    if family is not None and parsed.version != family:
        raise wrong(path, f"an IPv{family} address", address)
    return str(parsed)


def cidr(value: Any, path: str) -> str:
    """A network in canonical text (host bits cleared, as nftables and IPVS want it)."""
    raw = required_string(value, path)
    net = raw.strip()
    try:
        parsed = ipaddress.ip_network(net, strict=False) if "/" in net else None
    except ValueError:
        parsed = None
    if parsed is None or "%" in net:
        raise wrong(path, "a CIDR such as 198.18.0.0/24", raw)
    return str(parsed)

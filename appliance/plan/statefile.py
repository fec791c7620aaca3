"""The allocations state file: Service key -> VIPs and pools, as JSON. Pure: bytes in, bytes out.

    {"version": 1, "allocations": {"shop/web": {"addresses": ["198.18.50.16"],
                                                "pools": ["default"], "shared_key": null}}}

The daemon keeps this file so VIPs survive a restart where the Service status is not the
store (a files source, `write_status: false`). `decode` refuses anything it does not fully
understand with a one-line reason; the caller then starts with no claims (it never
guesses at half a file).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

from appliance.model import Allocation

VERSION = 1


class StateFileError(ValueError):
    """The state file cannot be used; str() is one line saying why."""


def encode_allocations(allocations: Mapping[str, Allocation]) -> bytes:
    """Canonical bytes: keys sorted, so the same allocations always give the same file."""
    doc = {
        "version": VERSION,
        "allocations": {
            key: {
                "addresses": list(a.addresses),
                "pools": list(a.pools),
                "shared_key": a.shared_key,
            }
            for key, a in sorted(allocations.items())
        },
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise StateFileError(f"{where}: must be a list of strings")
    return tuple(value)


def _allocation(key: object, value: object) -> Allocation:
    if not isinstance(key, str) or key.count("/") != 1 or "" in key.split("/"):
        raise StateFileError(f"allocations: {key!r} is not a Service key (namespace/name)")
    if not isinstance(value, dict):
        raise StateFileError(f"allocations[{key!r}]: must be an object")
    extra = sorted(set(value) - {"addresses", "pools", "shared_key"})
    if extra:
        raise StateFileError(f"allocations[{key!r}]: unknown field {extra[0]!r}")
    addresses = _strings(value.get("addresses"), f"allocations[{key!r}].addresses")
    pools = _strings(value.get("pools"), f"allocations[{key!r}].pools")
    if not addresses or len(addresses) != len(pools):
        raise StateFileError(
            f"allocations[{key!r}]: needs one pool per address, got {len(addresses)} "
            f"address(es) and {len(pools)} pool(s)"
        )
    for text in addresses:
        try:
            canonical = str(ipaddress.ip_address(text))
        except ValueError:
            raise StateFileError(f"allocations[{key!r}]: {text!r} is not an IP address") from None
        if canonical != text:
            raise StateFileError(f"allocations[{key!r}]: {text!r} is not canonical ({canonical})")
    shared = value.get("shared_key")
    if shared is not None and not isinstance(shared, str):
        raise StateFileError(f"allocations[{key!r}].shared_key: must be a string or null")
    return Allocation(key, addresses, pools, shared or None)


def json_object(data: bytes) -> dict[str, object]:
    """A state file's top level: a JSON object, or StateFileError saying what it is not."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StateFileError(f"not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise StateFileError(f"not JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise StateFileError("not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise StateFileError(f"must be a JSON object, got {type(doc).__name__}")
    return doc


def decode_allocations(data: bytes) -> dict[str, Allocation]:
    """The allocations in a state file, or StateFileError with a one-line reason."""
    doc = json_object(data)
    version = doc.get("version")
    if version != VERSION:
        raise StateFileError(f"version {version!r} is not supported (this daemon reads 1)")
    raw = doc.get("allocations")
    if not isinstance(raw, dict):
        raise StateFileError("allocations: must be an object of Service key -> allocation")
    return {key: _allocation(key, value) for key, value in raw.items()}

"""The last cluster snapshot on disk: ClusterState <-> JSON bytes. Pure: bytes in, bytes out.

    {"version": 1, "saved_at": 1767225600.5,
     "fields": {"Service": ["namespace", "name", "type", "ports", ...], "ServicePort": [...],
                ...},
     "services": [["shop", "web", "LoadBalancer", [["http", "TCP", 80, 8080, 30080]], ...]],
     "endpoint_slices": {"shop/web": [["shop", "web-x1", "web", "IPv4", [...], ...]]},
     "nodes": [...], "ingresses": [...], "refused": [...]}

The daemon keeps this file so that a restart during an API outage serves the last plan it
knew instead of nothing. Every object is a row of its fields' values, in the order the
header `fields` names them (JSON objects with the names repeated were 1.5x the size and 3x
the time at 50,000 Services). The reader maps the header's names onto the model, so a field
the model gains later with a default reads older files unchanged; a name it does not know
is refused. `decode` checks every value's type against the model (the planner trusts its
input) and refuses anything it does not fully understand with a one-line reason naming the
place (`services[12].ports[0].port: must be an integer`); the caller then serves nothing
from the file (it never guesses at half a snapshot).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

from appliance.model import (
    PROTOCOLS,
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Family,
    Ingress,
    Node,
    NodeAddress,
    Refusal,
    Service,
    ServicePort,
    ServiceType,
    TrafficPolicy,
)
from appliance.plan.statefile import StateFileError, json_object

VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedState:
    """A snapshot as the file holds it, and when the daemon received it (wall clock)."""

    state: ClusterState
    saved_at: float

    @property
    def services(self) -> int:
        return len(self.state.services)


# --- what each field holds ------------------------------------------------------------------
# A spec per field: "str", "int", "bool", "port" (targetPort: int, name or null), "labels"
# (str -> str), ("optional", spec), ("choice", values), ("tuple", spec), ("row", class).

Spec = Any

_STR_TUPLE: Spec = ("tuple", "str")
SPECS: dict[type[Any], dict[str, Spec]] = {
    ServicePort: {
        "name": "str",
        "protocol": ("choice", PROTOCOLS),
        "port": "int",
        "target_port": "port",
        "node_port": ("optional", "int"),
    },
    Service: {
        "namespace": "str",
        "name": "str",
        "type": ("choice", get_args(ServiceType)),
        "ports": ("tuple", ("row", ServicePort)),
        "uid": "str",
        "creation_timestamp": "str",
        "resource_version": "str",
        "labels": "labels",
        "annotations": "labels",
        "selector": "labels",
        "cluster_ips": _STR_TUPLE,
        "headless": "bool",
        "ip_families": ("tuple", ("choice", get_args(Family))),
        "ip_family_policy": ("optional", "str"),
        "external_traffic_policy": ("choice", get_args(TrafficPolicy)),
        "health_check_node_port": ("optional", "int"),
        "session_affinity": ("choice", ("None", "ClientIP")),
        "session_affinity_timeout": "int",
        "load_balancer_source_ranges": _STR_TUPLE,
        "load_balancer_class": ("optional", "str"),
        "load_balancer_ip": ("optional", "str"),
        "allocate_load_balancer_node_ports": "bool",
        "external_name": ("optional", "str"),
        "status_ingress_ips": _STR_TUPLE,
        "source": "str",
    },
    Endpoint: {
        "addresses": _STR_TUPLE,
        "ready": "bool",
        "serving": "bool",
        "terminating": "bool",
        "node_name": ("optional", "str"),
        "hostname": ("optional", "str"),
    },
    EndpointPort: {"name": "str", "port": "int", "protocol": ("choice", PROTOCOLS)},
    EndpointSlice: {
        "namespace": "str",
        "name": "str",
        "service_name": "str",
        "address_type": ("choice", ("IPv4", "IPv6", "FQDN")),
        "endpoints": ("tuple", ("row", Endpoint)),
        "ports": ("tuple", ("row", EndpointPort)),
        "source": "str",
        "legacy": "bool",
    },
    NodeAddress: {"type": "str", "address": "str"},
    Node: {
        "name": "str",
        "addresses": ("tuple", ("row", NodeAddress)),
        "ready": "bool",
        "labels": "labels",
        "source": "str",
    },
    Ingress: {
        "namespace": "str",
        "name": "str",
        "hosts": _STR_TUPLE,
        "status_ips": _STR_TUPLE,
        "ingress_class": ("optional", "str"),
        "source": "str",
    },
    Refusal: {"kind": "str", "namespace": "str", "name": "str", "reason": "str", "source": "str"},
}


def model_fields(cls: type[Any]) -> tuple[str, ...]:
    """The fields a model class is built from (Service.key is derived: not one of them)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


_GETTERS: dict[type[Any], Callable[[Any], tuple[object, ...]]] = {
    cls: operator.attrgetter(*model_fields(cls)) for cls in SPECS
}


@contextmanager
def _no_cycle_collector() -> Iterator[None]:
    """Hundreds of thousands of small acyclic objects: the cycle collector walking the
    whole heap meanwhile costs most of the time (5.7x on a decode of 50,000 Services)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


# --- writing -----------------------------------------------------------------------------


def _row(obj: object) -> object:
    """json's hook for what it cannot write itself: a model object becomes its row."""
    getter = _GETTERS.get(type(obj))
    if getter is not None:
        return getter(obj)
    if isinstance(obj, Mapping):  # labels held in another Mapping than dict
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not part of a cluster snapshot")


def encode_state(state: ClusterState, saved_at: float) -> bytes:
    """The snapshot as compact JSON, in the snapshot's own order (the same snapshot always
    gives the same bytes)."""
    doc = {
        "version": VERSION,
        "saved_at": saved_at,
        "fields": {cls.__name__: list(model_fields(cls)) for cls in SPECS},
        "services": list(state.services.values()),
        "endpoint_slices": state.endpoint_slices,
        "nodes": list(state.nodes.values()),
        "ingresses": list(state.ingresses.values()),
        "refused": state.refused,
    }
    with _no_cycle_collector():
        text = json.dumps(doc, separators=(",", ":"), default=_row)
    return (text + "\n").encode()


# --- reading -----------------------------------------------------------------------------


class _Bad(Exception):
    """A value that does not fit; `path` grows on the way up (only when it fails)."""

    def __init__(self, what: str, path: str = "") -> None:
        super().__init__(what)
        self.what, self.path = what, path


Check = Callable[[object], Any]


def _str(v: object) -> str:
    if type(v) is str:
        return v
    raise _Bad("must be a string")


def _int(v: object) -> int:
    if type(v) is int:
        return v
    raise _Bad("must be an integer")


def _bool(v: object) -> bool:
    if type(v) is bool:
        return v
    raise _Bad("must be true or false")


def _port(v: object) -> int | str | None:
    if v is None or type(v) is str or type(v) is int:
        return v
    raise _Bad("must be a port number, a port name or null")


def _labels(v: object) -> dict[str, str]:
    if type(v) is dict and all(type(k) is str and type(x) is str for k, x in v.items()):
        return v
    raise _Bad("must be an object of strings")


def _optional(check: Check) -> Check:
    def read(v: object) -> Any:
        return None if v is None else check(v)

    return read


def _choice(values: tuple[str, ...]) -> Check:
    allowed = frozenset(values)

    def read(v: object) -> str:
        if type(v) is str and v in allowed:
            return v
        raise _Bad(f"{v!r} is not one of {', '.join(values)}")

    return read


def _tuple(check: Check) -> Check:
    def read(v: object) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _Bad("must be a list")
        try:
            return tuple([check(x) for x in v])
        except _Bad:
            for i, x in enumerate(v):
                try:
                    check(x)
                except _Bad as e:
                    raise _Bad(e.what, f"[{i}]{e.path}") from None
            raise

    return read


def _rows(cls: type[Any], columns: tuple[str, ...], checks: tuple[Check, ...]) -> Check:
    """A row in the file's column order -> the model object."""
    width = len(columns)
    pairs = tuple(zip(columns, checks, strict=True))
    # A file this daemon wrote has the model's own order: the values go in as they are.
    positional = columns == model_fields(cls)

    def read(v: object) -> Any:
        if type(v) is not list or len(v) != width:
            raise _Bad(f"must be a list of {width} values ({cls.__name__})")
        try:
            if positional:
                return cls(*[check(x) for check, x in zip(checks, v, strict=True)])
            return cls(**{name: check(x) for (name, check), x in zip(pairs, v, strict=True)})
        except _Bad:
            for (name, check), x in zip(pairs, v, strict=True):
                try:
                    check(x)
                except _Bad as e:
                    raise _Bad(e.what, f".{name}{e.path}") from None
            raise

    return read


_SIMPLE: dict[str, Check] = {
    "str": _str,
    "int": _int,
    "bool": _bool,
    "port": _port,
    "labels": _labels,
}


def _compile(spec: Spec, readers: Mapping[type[Any], Check]) -> Check:
    if isinstance(spec, str):
        return _SIMPLE[spec]
    what, arg = spec
    if what == "optional":
        return _optional(_compile(arg, readers))
    if what == "choice":
        return _choice(arg)
    if what == "tuple":
        return _tuple(_compile(arg, readers))
    assert what == "row", spec
    return readers[arg]


def _readers(header: object) -> dict[type[Any], Check]:
    """A reader per model class for the columns the file's header names."""
    if not isinstance(header, dict):
        raise StateFileError("fields: must be an object of class name -> field names")
    by_name = {cls.__name__: cls for cls in SPECS}
    extra = sorted(set(header) - set(by_name))
    if extra:
        raise StateFileError(f"fields: unknown class {extra[0]!r}")
    readers: dict[type[Any], Check] = {}
    # Leaves first: a class is compiled after every class its rows hold.
    for cls in (ServicePort, Endpoint, EndpointPort, NodeAddress, *SPECS):
        if cls in readers:
            continue
        columns = header.get(cls.__name__)
        where = f"fields.{cls.__name__}"
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise StateFileError(f"{where}: must be a list of field names")
        specs = SPECS[cls]
        unknown = [c for c in columns if c not in specs]
        if unknown:
            raise StateFileError(f"{where}: unknown field {unknown[0]!r}")
        if len(set(columns)) != len(columns):
            raise StateFileError(f"{where}: a field is named twice")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in columns]
        if missing:
            raise StateFileError(f"{where}: {missing[0]!r} missing")
        checks = tuple(_compile(specs[c], readers) for c in columns)
        readers[cls] = _rows(cls, tuple(columns), checks)
    return readers


def _read_list(doc: Mapping[str, Any], name: str, read: Check) -> list[Any]:
    items = doc.get(name)
    if not isinstance(items, list):
        raise StateFileError(f"{name}: must be a list")
    try:
        return [read(x) for x in items]
    except _Bad:
        for i, x in enumerate(items):
            try:
                read(x)
            except _Bad as e:
                raise StateFileError(f"{name}[{i}]{e.path}: {e.what}") from None
        raise


def _keyed(items: list[Any], key: Callable[[Any], str], what: str) -> dict[str, Any]:
    out = {key(item): item for item in items}
    if len(out) != len(items):
        seen: set[str] = set()
        for item in items:
            k = key(item)
            if k in seen:
                raise StateFileError(f"{what} {k} appears twice")
            seen.add(k)
    return out


_TOP = frozenset(
    ("version", "saved_at", "fields", "services", "endpoint_slices", "nodes", "ingresses",
     "refused")
)  # fmt: skip


def decode_state(data: bytes) -> SavedState:
    """The snapshot in a file, or StateFileError with a one-line reason."""
    with _no_cycle_collector():
        return _decode(data)


def _decode(data: bytes) -> SavedState:
    doc: dict[str, Any] = json_object(data)
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise StateFileError(f"version {version!r} is not supported (this daemon reads {VERSION})")
    extra = sorted(set(doc) - _TOP)
    if extra:
        raise StateFileError(f"unknown field {extra[0]!r}")
    saved_at = doc.get("saved_at")
    if (
        not isinstance(saved_at, int | float)
        or type(saved_at) is bool
        or not math.isfinite(saved_at)
    ):
        raise StateFileError("saved_at: must be a number (seconds since the epoch)")
    readers = _readers(doc.get("fields"))
    services = _read_list(doc, "services", readers[Service])
    raw_slices = doc.get("endpoint_slices")
    if not isinstance(raw_slices, dict):
        raise StateFileError("endpoint_slices: must be an object of Service key -> slices")
    read_slices = _tuple(readers[EndpointSlice])
    slices: dict[str, tuple[EndpointSlice, ...]] = {}
    for key, items in raw_slices.items():
        try:
            slices[key] = read_slices(items)
        except _Bad as e:
            raise StateFileError(f"endpoint_slices[{key!r}]{e.path}: {e.what}") from None
    nodes = _read_list(doc, "nodes", readers[Node])
    ingresses = _read_list(doc, "ingresses", readers[Ingress])
    refused = tuple(_read_list(doc, "refused", readers[Refusal]))
    state = ClusterState(
        services=_keyed(services, lambda s: s.key, "Service"),
        endpoint_slices=slices,
        nodes=_keyed(nodes, lambda n: n.name, "Node"),
        ingresses=_keyed(ingresses, lambda i: i.key, "Ingress"),
        refused=refused,
    )
    return SavedState(state, float(saved_at))

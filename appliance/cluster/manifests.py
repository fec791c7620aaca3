"""Kubernetes objects -> the model: Services, EndpointSlices, Nodes, Ingresses.

`object_from_dict` converts one object as `kubectl get -o yaml` or the API returns it
and refuses a bad one with the reason the API server would give; `parse_text` reads a
file (multi-document YAML, JSON, `kind: List`); `build_state` makes one ClusterState of
many objects. Nothing here raises on bad input except ManifestError.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import yaml

from appliance.cluster import fields as f
from appliance.cluster.fields import ManifestError
from appliance.cluster.resources import (
    endpoint_slice,
    endpoints,
    ingress,
    node,
    service,
)
from appliance.model import (
    ClusterState,
    EndpointSlice,
    Ingress,
    Node,
    Refusal,
    Service,
)

__all__ = [
    "KubeObject",
    "ManifestError",
    "build_state",
    "object_from_dict",
    "parse_text",
]

KubeObject = Service | EndpointSlice | Node | Ingress

# (API group, kind) -> (versions we read, converter). Matching the group keeps other
# projects' kinds out: Knative's serving.knative.dev/v1 Service is not a Service.
Converter = Callable[[Mapping[str, Any], str], KubeObject]
_KINDS: dict[tuple[str, str], tuple[tuple[str, ...], Converter]] = {
    ("", "Service"): (("v1",), service),
    ("", "Endpoints"): (("v1",), endpoints),
    ("discovery.k8s.io", "EndpointSlice"): (("v1", "v1beta1"), endpoint_slice),
    ("", "Node"): (("v1",), node),
    ("networking.k8s.io", "Ingress"): (("v1", "v1beta1"), ingress),
    ("extensions", "Ingress"): (("v1beta1",), ingress),
}


def object_from_dict(obj: Mapping[str, Any], source: str = "") -> KubeObject | None:
    """One Kubernetes object -> the model; None for kinds we do not use.

    Raises ManifestError (`<path>: <reason>`) for an object the API server would refuse."""
    if not isinstance(obj, Mapping):
        raise f.wrong("object", "an object with apiVersion and kind", obj)
    kind = f.required_string(obj.get("kind"), "kind")
    api_version = f.required_string(obj.get("apiVersion"), "apiVersion")
    group, _, version = api_version.rpartition("/")
    known = _KINDS.get((group, kind))
    if known is None:
        return None
    versions, convert = known
    if version not in versions:
        wanted = " or ".join(f"{group}/{v}" if group else v for v in versions)
        raise f.fail("apiVersion", f"must be {wanted} for {kind}, got {f.show(api_version)}")
    converted: KubeObject = convert(obj, source)
    return converted


def _ref(obj: Any) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object as far as they can be read, for a Refusal."""
    if not isinstance(obj, Mapping):
        return ("Object", "", "")
    kind = obj.get("kind")
    kind = kind if isinstance(kind, str) and kind else "Object"
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name")
    name = name if isinstance(name, str) else ""
    namespace = meta.get("namespace")
    if kind == "Node":
        namespace = ""
    elif not isinstance(namespace, str) or not namespace:
        namespace = "default"
    return (kind, namespace, name)


_FAST = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader
# libyaml composes nested nodes by C recursion: past some tens of thousands of levels the
# process dies (a segfault, not an exception). Its parser keeps its own stack, so events
# are safe at any depth; Kubernetes objects nest about 20 deep.
MAX_DEPTH = 1000
_NESTING = ("[", "{", "-", "?", ":")  # every level of nesting needs one of these


class _Loader(_FAST):  # type: ignore[valid-type,misc]
    """YAML as Kubernetes reads it for our purposes: timestamps stay text (creationTimestamp
    is kept as the API wrote it), everything else as YAML 1.1 safe loading gives it."""


class _SafeLoader(yaml.SafeLoader):
    """The pure-Python loader, for hostile nesting: it fails with RecursionError."""


_Loader.yaml_implicit_resolvers = _SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _too_deep(text: str) -> bool:
    if sum(text.count(c) for c in _NESTING) <= MAX_DEPTH:
        return False
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_FAST):
            kind = type(event)
            if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                depth += 1
                if depth > MAX_DEPTH:
                    return True
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                depth -= 1
    except yaml.YAMLError:
        pass  # the loader meets the same error and reports it with its line
    return False


def _documents(text: str, source: str) -> tuple[list[Any], Refusal | None]:
    """The documents of a file, and the syntax error that ended it early, if any."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return [json.loads(text)], None
        except ValueError:
            pass  # maybe YAML flow style; the YAML loader says what is wrong
        except RecursionError:
            return [], Refusal("File", "", source, "JSON nested too deeply", source)
    docs: list[Any] = []
    try:
        loader = _SafeLoader if _too_deep(text) else _Loader
        for doc in yaml.load_all(text, Loader=loader):
            docs.append(doc)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = e.problem or e.context or "invalid"
        line = f":{mark.line + 1}" if mark else ""
        reason = f"YAML syntax error{where}: {what}"
        return docs, Refusal("File", "", source, reason, f"{source}{line}")
    except yaml.YAMLError as e:
        return docs, Refusal("File", "", source, f"YAML error: {e}", source)
    except RecursionError:
        return docs, Refusal(
            "File", "", source, f"YAML nested over {MAX_DEPTH} levels deep", source
        )
    return docs, None


def _flatten(doc: Any, where: str) -> Iterator[tuple[Any, str]]:
    """The objects of one document: itself, or the items of a List (`kind: List` from
    kubectl, `ServiceList` from the API, whose items carry no kind of their own)."""
    kind = doc.get("kind") if isinstance(doc, Mapping) else None
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        yield doc, where
        return
    list_items = doc.get("items")
    if not isinstance(list_items, list | tuple):
        yield {"kind": kind, "apiVersion": doc.get("apiVersion"), "items": list_items}, where
        return
    item_kind = kind[: -len("List")]
    for i, item in enumerate(list_items):
        here = f"{where} items[{i}]"
        if isinstance(item, Mapping) and item_kind and "kind" not in item:
            yield {**item, "kind": item_kind, "apiVersion": doc.get("apiVersion")}, here
        else:
            yield item, here


def _convert(obj: Any, source: str) -> KubeObject | Refusal | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("kind"), str):
        kind = obj["kind"]
        if kind.endswith("List") and "items" in obj:
            return Refusal(kind, "", "", "items: a List inside a List is not read", source)
    try:
        return object_from_dict(obj, source)
    except ManifestError as e:
        kind, namespace, name = _ref(obj)
        return Refusal(kind, namespace, name, str(e), source)
    except RecursionError:
        kind, namespace, name = _ref(obj)
        return Refusal(kind, namespace, name, "nested too deeply", source)


def parse_text(text: str, source: str) -> tuple[list[KubeObject], list[Refusal]]:
    """The objects of one file and the refusals of those we cannot use.

    Objects' `source` is the file, with `#n` for the n-th document of a multi-document
    file and ` items[i]` inside a List, so every message points at the object."""
    docs, syntax_error = _documents(text, source)
    objects: list[KubeObject] = []
    refused: list[Refusal] = []
    numbered = len(docs) > 1 or (syntax_error is not None and len(docs) > 0)
    for n, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source}#{n}" if numbered else source
        for obj, obj_source in _flatten(doc, where):
            result = _convert(obj, obj_source)
            if isinstance(result, Refusal):
                refused.append(result)
            elif result is not None:
                objects.append(result)
    if syntax_error is not None:
        refused.append(syntax_error)
    return objects, refused


def _kind_of(obj: KubeObject) -> str:
    if isinstance(obj, EndpointSlice):
        return "Endpoints" if obj.legacy else "EndpointSlice"
    return type(obj).__name__


def _key_of(obj: KubeObject) -> str:
    if isinstance(obj, Node):
        return obj.name
    return f"{obj.namespace}/{obj.name}"


def _created(obj: KubeObject) -> str:
    # Services carry creationTimestamp; an object without one counts as the newest.
    stamp = getattr(obj, "creation_timestamp", "")
    return stamp if isinstance(stamp, str) and stamp else "\uffff"


def build_state(
    objects: Iterable[KubeObject],
    refused: Iterable[Refusal],
    previous: ClusterState | None = None,
) -> ClusterState:
    """One snapshot of many objects.

    The same kind and name twice: the one created first stays (the API server would
    have refused the second create); without timestamps, the one read first. The other
    is refused, naming where the kept one came from. A Service's core v1 Endpoints count
    only when it has no EndpointSlice (kube-proxy's behaviour before slices). With
    `previous`, a Service's slices tuple is that snapshot's very tuple when none of its
    slices changed, so caches keyed by identity stay valid."""
    kept: dict[tuple[str, str], KubeObject] = {}
    duplicates: list[tuple[KubeObject, KubeObject]] = []  # (refused, kept)
    for obj in objects:
        key = (_kind_of(obj), _key_of(obj))
        first = kept.get(key)
        if first is None:
            kept[key] = obj
        elif _created(obj) < _created(first):
            kept[key] = obj
            duplicates.append((first, obj))
        else:
            duplicates.append((obj, first))

    services: dict[str, Service] = {}
    nodes: dict[str, Node] = {}
    ingresses: dict[str, Ingress] = {}
    slices: dict[str, list[EndpointSlice]] = {}
    legacy: dict[str, list[EndpointSlice]] = {}
    for (_, name), obj in kept.items():
        if isinstance(obj, Service):
            services[name] = obj
        elif isinstance(obj, Node):
            nodes[name] = obj
        elif isinstance(obj, Ingress):
            ingresses[name] = obj
        elif obj.service_name:  # a slice that names no Service belongs to none
            (legacy if obj.legacy else slices).setdefault(obj.service_key, []).append(obj)
    for service_key, fallback in legacy.items():
        slices.setdefault(service_key, fallback)

    before = previous.endpoint_slices if previous is not None else {}
    grouped: dict[str, tuple[EndpointSlice, ...]] = {}
    for service_key in sorted(slices):
        group = tuple(sorted(slices[service_key], key=lambda s: s.name))
        old = before.get(service_key)
        if old is not None and _same_items(old, group):
            group = old
        grouped[service_key] = group

    all_refused = list(refused)
    for dup, first in duplicates:
        namespace = "" if isinstance(dup, Node) else dup.namespace
        origin = first.source or "another object"
        reason = f"duplicate: already defined in {origin}"
        all_refused.append(Refusal(_kind_of(dup), namespace, dup.name, reason, dup.source))
    return ClusterState(
        services=services,
        endpoint_slices=grouped,
        nodes=nodes,
        ingresses=ingresses,
        refused=tuple(all_refused),
    )


def _same_items(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))

"""The rules of the API the stand-in (fake_apiserver.py) follows: the kinds it serves,
Status objects, RFC 7386 merge patches, and the validation that answers 422."""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Kind:
    group: str  # "" = core
    version: str
    resource: str  # plural, as in the URL
    kind: str
    namespaced: bool = True
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = (
    Kind("", "v1", "services", "Service", has_status=True),
    Kind("", "v1", "nodes", "Node", namespaced=False, has_status=True),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "serviceaccounts", "ServiceAccount"),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, has_status=True),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Kind("networking.k8s.io", "v1", "ingresses", "Ingress", has_status=True),
    Kind("events.k8s.io", "v1", "events", "Event"),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
)
_BY_PATH = {(k.group, k.version, k.resource): k for k in KINDS}
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def response(self) -> web.Response:
        return web.json_response(
            status_object(self.code, self.reason, self.message), status=self.code
        )


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def invalid(kind: Kind, name: str, causes: list[str]) -> ApiError:
    return ApiError(422, "Invalid", f'{kind.kind} "{name}" is invalid: ' + ", ".join(causes))


def validate(kind: Kind, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    name = meta.get("name")
    causes: list[str] = []
    if not isinstance(name, str) or not name:
        causes.append("metadata.name: Required value: name or generateName is required")
        raise invalid(kind, "", causes)
    pattern = _DNS1035_LABEL if kind.kind == "Service" else _DNS1123_SUBDOMAIN
    if not pattern.fullmatch(name) or len(name) > (63 if kind.kind == "Service" else 253):
        causes.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 name")
    if kind.kind == "Service":
        causes += _service_problems(obj)
    elif kind.kind == "Event":
        for required in (
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ):
            if not obj.get(required):
                causes.append(f"{required}: Required value")
        if obj.get("type") not in ("Normal", "Warning"):
            causes.append(
                f"type: Unsupported value: {obj.get('type')!r}: "
                'supported values: "Normal", "Warning"'
            )
        if len(obj.get("note") or "") > 1024:
            causes.append("note: Too long: may not be more than 1024 bytes")
        regarding = obj.get("regarding") or {}
        if regarding.get("namespace") not in (None, meta.get("namespace")):
            causes.append("regarding.namespace: Invalid value: does not match event.namespace")
    elif kind.kind == "Lease":
        spec = obj.get("spec") or {}
        seconds = spec.get("leaseDurationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or seconds <= 0):
            causes.append("spec.leaseDurationSeconds: Invalid value: must be greater than 0")
    if causes:
        raise invalid(kind, name, causes)


def _service_problems(obj: dict[str, Any]) -> list[str]:
    causes: list[str] = []
    spec = obj.get("spec") or {}
    stype = spec.get("type")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(f"spec.type: Unsupported value: {stype!r}")
    ports = spec.get("ports") or []
    if stype != "ExternalName" and not ports:
        causes.append("spec.ports: Required value")
    for i, port in enumerate(ports):
        p = port.get("port") if isinstance(port, dict) else None
        if not isinstance(p, int) or not 1 <= p <= 65535:
            causes.append(
                f"spec.ports[{i}].port: Invalid value: {p!r}: "
                "must be between 1 and 65535, inclusive"
            )
        if isinstance(port, dict) and port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            causes.append(f"spec.ports[{i}].protocol: Unsupported value: {port.get('protocol')!r}")
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for i, entry in enumerate(ingress):
        ip = entry.get("ip") if isinstance(entry, dict) else None
        if ip is not None:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ip: Invalid value: {ip!r}: "
                    "must be a valid IP address"
                )
        mode = entry.get("ipMode") if isinstance(entry, dict) else None
        if mode is not None:
            if mode not in ("VIP", "Proxy"):
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ipMode: Unsupported value: {mode!r}: "
                    'supported values: "Proxy", "VIP"'
                )
            elif ip is None:
                causes.append(
                    f"status.loadBalancer.ingress[{i}].ipMode: Forbidden: "
                    "may not be specified when `ip` is not set"
                )
    return causes


# --- RBAC ----------------------------------------------------------------------------------

Rule = tuple[str | None, set[str], set[str], set[str]]  # namespace (None: any), groups, ...


def rbac_rules(documents: list[dict[str, Any]]) -> list[Rule]:
    """The rules of the ClusterRoles and Roles in these documents (all of them count as
    bound, as deploy/rbac.yaml binds them)."""
    rules: list[Rule] = []
    for doc in documents:
        if doc.get("kind") not in ("ClusterRole", "Role"):
            continue
        ns = doc["metadata"].get("namespace") if doc["kind"] == "Role" else None
        for r in doc.get("rules") or []:
            rules.append((ns, set(r["apiGroups"]), set(r["resources"]), set(r["verbs"])))
    return rules


def forbidden(
    rules: list[Rule],
    request: web.Request,
    kind: Kind,
    ns: str | None,
    name: str | None,
    sub: str | None,
) -> str | None:
    """What the request would do, if no rule allows it; None when one does."""
    method = request.method
    if method == "GET":
        verb = "get" if name else ("watch" if request.query.get("watch") else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    resource = f"{kind.resource}/{sub}" if sub else kind.resource
    for rule_ns, groups, resources, verbs in rules:
        if rule_ns is not None and rule_ns != ns:
            continue
        if kind.group in groups and resource in resources and verb in verbs:
            return None
    return f"{verb} {resource} ({kind.group or 'core'}) in {ns or 'all namespaces'}"


# --- defaults the server fills in ---------------------------------------------------------


@dataclass
class Allocated:
    cluster_ips: int = 0
    node_ports: int = 0


def default_service(obj: dict[str, Any], counter: Allocated) -> None:
    """What the real server fills in on create: type, a cluster IP, families, traffic
    policies, node ports for NodePort and LoadBalancer, port protocols and targets."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if spec.get("clusterIP") != "None":
            counter.cluster_ips += 1
            n = counter.cluster_ips
            spec["clusterIP"] = f"198.19.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and "nodePort" not in port:
                port["nodePort"] = 30000 + counter.node_ports
                counter.node_ports += 1
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))

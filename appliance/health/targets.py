"""What to check: targets derived from the desired state, the Services' annotations and
the health config. Pure.

Defaults follow the traffic policy, as kube-proxy exposes it on every node:

- `externalTrafficPolicy: Local`: GET / on the Service's `healthCheckNodePort`; kube-proxy
  answers 200 with `localEndpoints` > 0 when the node has a ready endpoint, 503 otherwise.
  One target per (Service, node).
- `externalTrafficPolicy: Cluster`: GET /healthz on kube-proxy's node port (10256); 503
  while kube-proxy is stale or the node is being deleted. One target per node, shared by
  every such Service (Health key ("", node)).

A Service may override with `appliance.io/health-check-*` annotations; a Service with
any override gets its own targets (keyed by the Service), since a shared node check
cannot take one Service's settings. A bad annotation is a Problem on the Service and
the default is used instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from appliance.address import host_port
from appliance.config import HealthConfig, fmt_seconds, parse_duration
from appliance.model import ClusterState, DesiredState, Problem, RealServer, Service

CheckKind = Literal["tcp", "http", "kube-proxy", "kube-proxy-node"]
"""kube-proxy: a healthCheckNodePort (JSON localEndpoints); kube-proxy-node: :10256/healthz."""

ANN_HC = "appliance.io/health-check-"
ANN_HC_TYPE = ANN_HC + "type"  # kube-proxy | http | tcp | none
ANN_HC_PORT = ANN_HC + "port"
ANN_HC_PATH = ANN_HC + "path"
ANN_HC_INTERVAL = ANN_HC + "interval"
ANN_HC_TIMEOUT = ANN_HC + "timeout"
ANN_HC_RISE = ANN_HC + "rise"
ANN_HC_FALL = ANN_HC + "fall"
ANN_HC_STATUS = ANN_HC + "status"  # http: expected codes, "200" or "200,204"
ANN_HC_BODY = ANN_HC + "body"  # http: the body must contain this text
ANNOTATIONS = (
    ANN_HC_TYPE,
    ANN_HC_PORT,
    ANN_HC_PATH,
    ANN_HC_INTERVAL,
    ANN_HC_TIMEOUT,
    ANN_HC_RISE,
    ANN_HC_FALL,
    ANN_HC_STATUS,
    ANN_HC_BODY,
)
TYPES = ("kube-proxy", "http", "tcp", "none")
NODE_HEALTHZ_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to check periodically. `service` is "" for a node-wide check."""

    service: str
    node: str
    kind: CheckKind
    address: str
    port: int
    interval: float
    timeout: float
    rise: int
    fall: int
    path: str = "/"
    expect: tuple[int, ...] = (200,)
    body: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.node)

    @property
    def endpoint(self) -> str:
        """How the status page names what is probed: `http://198.18.0.11:10256/healthz`."""
        if self.kind == "tcp":
            return f"tcp://{host_port(self.address, self.port)}"
        return f"http://{host_port(self.address, self.port)}{self.path}"


def same_probe(a: Target, b: Target) -> bool:
    """Whether results about `a` still say something about `b` (timing may differ)."""
    return (a.kind, a.address, a.port, a.path, a.expect, a.body) == (
        b.kind,
        b.address,
        b.port,
        b.path,
        b.expect,
        b.body,
    )


@dataclass(frozen=True, slots=True)
class Targets:
    targets: tuple[Target, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class _Settings:
    kind: CheckKind | Literal["none"]
    port: int | None
    path: str
    interval: float
    timeout: float
    rise: int
    fall: int
    expect: tuple[int, ...]
    body: str | None
    overridden: bool


def _int(text: str, lo: int, hi: int) -> int | None:
    t = text.strip()
    if not t.isdigit():
        return None
    v = int(t)
    return v if lo <= v <= hi else None


def settings_of(svc: Service, config: HealthConfig) -> tuple[_Settings, list[str]]:
    """The check a Service asks for, and one line per annotation that could not be used."""
    ann = svc.annotations
    bad: list[str] = []
    local = svc.external_traffic_policy == "Local"

    def reject(key: str, why: str, using: str) -> None:
        bad.append(f"annotation {key}: {short(ann[key])} {why}; using {using}")

    kind: CheckKind | Literal["none"] = "kube-proxy" if local else "kube-proxy-node"
    if ANN_HC_TYPE in ann:
        asked = ann[ANN_HC_TYPE].strip().lower()
        if asked in ("http", "tcp", "none"):
            kind = asked  # type: ignore[assignment]
        elif asked != "kube-proxy":
            reject(ANN_HC_TYPE, f"is not one of {', '.join(TYPES)}", kind)
    port: int | None = None
    if ANN_HC_PORT in ann:
        port = _int(ann[ANN_HC_PORT], 1, 65535)
        if port is None:
            reject(ANN_HC_PORT, "is not a port number (1-65535)", "the default port")
    path = NODE_HEALTHZ_PATH if kind == "kube-proxy-node" else "/"
    if ANN_HC_PATH in ann:
        p = ann[ANN_HC_PATH]
        if p.startswith("/") and p.isprintable() and " " not in p and len(p) <= 1024:
            path = p
        else:
            reject(ANN_HC_PATH, "is not an absolute URL path", path)

    def duration(key: str, default: float, lo: float) -> float:
        if key not in ann:
            return default
        v = parse_duration(ann[key])
        if v is None or not lo <= v <= 3600.0:
            reject(
                key,
                f"is not a duration from {fmt_seconds(lo)} to 1h",
                fmt_seconds(default),
            )
            return default
        return v

    interval = duration(ANN_HC_INTERVAL, config.interval, 0.01)
    timeout = duration(ANN_HC_TIMEOUT, config.timeout, 0.001)
    if timeout >= interval:
        fixed = min(config.timeout, interval / 2)
        bad.append(
            f"health-check timeout {fmt_seconds(timeout)} must be shorter than the interval "
            f"{fmt_seconds(interval)}; using {fmt_seconds(fixed)}"
        )
        timeout = fixed

    def count(key: str, default: int) -> int:
        if key not in ann:
            return default
        v = _int(ann[key], 1, 1000)
        if v is None:
            reject(key, "is not an integer from 1 to 1000", str(default))
            return default
        return v

    rise = count(ANN_HC_RISE, config.rise)
    fall = count(ANN_HC_FALL, config.fall)
    expect: tuple[int, ...] = (200,)
    if ANN_HC_STATUS in ann:
        codes = [_int(c, 100, 599) for c in ann[ANN_HC_STATUS].split(",")]
        if codes and all(c is not None for c in codes):
            expect = tuple(sorted({c for c in codes if c is not None}))
        else:
            reject(ANN_HC_STATUS, "is not a list of HTTP status codes like 200,204", "200")
    body = ann.get(ANN_HC_BODY) or None
    overridden = any(k in ann for k in ANNOTATIONS)
    return _Settings(kind, port, path, interval, timeout, rise, fall, expect, body, overridden), bad


def short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _first_address(servers: Iterable[RealServer], into: dict[str, str]) -> None:
    # One address per node: IPv4 first (the caller feeds IPv4 virtual services first).
    for rs in servers:
        into.setdefault(rs.node, rs.address)


def derive_targets(
    state: ClusterState,
    desired: DesiredState,
    config: HealthConfig,
    kube_proxy_port: int | None = None,
) -> Targets:
    """Every target the desired state needs, sorted by key; none when checks are off.
    `kube_proxy_port` overrides the config's (tests run every "node" on one host).

    Weight-0 real servers are checked too: a node drained by a failing check must be
    seen recovering."""
    if not config.enabled:
        return Targets((), ())
    node_port = config.kube_proxy_port if kube_proxy_port is None else kube_proxy_port
    nodes_of: dict[str, dict[str, str]] = {}
    first_port: dict[str, int] = {}
    for vs in sorted(desired.virtual_services, key=lambda v: (v.service, v.family)):
        _first_address(vs.real_servers, nodes_of.setdefault(vs.service, {}))
        first_port.setdefault(vs.service, vs.real_port)
    targets: dict[tuple[str, str], Target] = {}
    problems: list[Problem] = []
    services: Mapping[str, Service] = state.services
    for key in sorted(nodes_of):
        svc = services.get(key)
        if svc is None:
            continue
        s, bad = settings_of(svc, config)
        problems.extend(Problem("Service", key, why) for why in bad)
        if s.kind == "none":
            continue
        if s.kind == "kube-proxy":
            port = s.port or svc.health_check_node_port
            if port is None:
                problems.append(
                    Problem(
                        "Service",
                        key,
                        "health check: no healthCheckNodePort to ask kube-proxy about local "
                        "endpoints; not checked (set appliance.io/health-check-port)",
                    )
                )
                continue
        elif s.kind == "kube-proxy-node":
            port = s.port or node_port
        else:
            port = s.port or first_port[key]
        # An overridden node check is still the node check, but this Service's own.
        shared = s.kind == "kube-proxy-node" and not s.overridden
        for node, address in sorted(nodes_of[key].items()):
            t = Target(
                service="" if shared else key,
                node=node,
                kind=s.kind,
                address=address,
                port=port,
                interval=s.interval,
                timeout=s.timeout,
                rise=s.rise,
                fall=s.fall,
                path=s.path,
                expect=s.expect,
                body=s.body,
            )
            targets.setdefault(t.key, t)
    return Targets(tuple(targets[k] for k in sorted(targets)), tuple(problems))

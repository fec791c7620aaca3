"""Small builders for model objects, so planner tests say only what matters to them."""

from __future__ import annotations

import ipaddress
from typing import Any

from appliance.config import Config, DataplaneConfig, DnsConfig, LabelSelector, Pool
from appliance.model import (
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Ingress,
    Node,
    NodeAddress,
    Service,
    ServicePort,
)


def pool(name: str, *specs: str, **kw: Any) -> Pool:
    """`pool("default", "198.18.100.0/30", "198.18.100.10-198.18.100.11")`."""
    ranges: list[Any] = []
    for spec in specs:
        if "-" in spec:
            first, last = (ipaddress.ip_address(s) for s in spec.split("-"))
        else:
            net = ipaddress.ip_network(spec)
            first, last = net[0], net[-1]
        ranges.append((first, last))
    if "service_selector" in kw and isinstance(kw["service_selector"], dict):
        kw["service_selector"] = LabelSelector(tuple(kw["service_selector"].items()))
    return Pool(name, tuple(ranges), **kw)


def config(*pools: Pool, dns: DnsConfig | None = None, **dataplane: Any) -> Config:
    return Config(
        pools=pools or (pool("default", "198.18.100.0/29"),),
        dataplane=DataplaneConfig(**dataplane),
        dns=dns or DnsConfig(zones=("cluster.local",)),
    )


def lb(name: str, ns: str = "shop", age: int = 0, **kw: Any) -> Service:
    """A LoadBalancer Service with one TCP port 80 -> nodePort 30080 unless told otherwise;
    `age` orders creation (0 is the oldest)."""
    kw.setdefault("ports", (ServicePort("http", "TCP", 80, 8080, 30080),))
    kw.setdefault("uid", f"uid-{name}")
    kw.setdefault("creation_timestamp", f"2026-01-01T00:00:{age:02d}Z")
    return Service(ns, name, kw.pop("type", "LoadBalancer"), **kw)


def node(name: str, v4: str | None, v6: str | None = None, **kw: Any) -> Node:
    addrs = tuple(NodeAddress("InternalIP", a) for a in (v4, v6) if a)
    return Node(name, addrs, **kw)


def slice_(
    svc: str,
    *eps: Endpoint,
    ns: str = "shop",
    ports: Any = None,
    family: Any = "IPv4",
    name: str | None = None,
) -> EndpointSlice:
    return EndpointSlice(
        ns,
        name or f"{svc}-{family.lower()}",
        svc,
        family,
        eps,
        ports if ports is not None else (EndpointPort("http", 8080),),
    )


def ep(address: str, node_name: str | None, **kw: Any) -> Endpoint:
    return Endpoint((address,), node_name=node_name, **kw)


NODES = {
    n.name: n
    for n in (
        node("node-1", "198.18.0.11", "fd00:198:18::11"),
        node("node-2", "198.18.0.12", "fd00:198:18::12"),
        node("node-3", "198.18.0.13", "fd00:198:18::13"),
    )
}


def state(
    *services: Service, slices: Any = (), nodes: Any = None, ingresses: Any = ()
) -> ClusterState:
    by_service: dict[str, list[EndpointSlice]] = {}
    for sl in slices:
        by_service.setdefault(sl.service_key, []).append(sl)
    return ClusterState(
        services={s.key: s for s in services},
        endpoint_slices={k: tuple(v) for k, v in by_service.items()},
        nodes=NODES if nodes is None else {n.name: n for n in nodes},
        ingresses={i.key: i for i in ingresses},
    )


def ingress(name: str, hosts: tuple[str, ...], ips: tuple[str, ...], ns: str = "shop") -> Ingress:
    return Ingress(ns, name, hosts, ips)

"""Kubernetes objects as a client sends them to the API server, for the kube suites."""

from __future__ import annotations

from typing import Any


def service(
    name: str,
    namespace: str = "default",
    type_: str = "LoadBalancer",
    ports: tuple[int, ...] = (80,),
    annotations: dict[str, str] | None = None,
    load_balancer_class: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": type_,
        "selector": {"app": name},
        "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in ports],
    }
    if load_balancer_class:
        spec["loadBalancerClass"] = load_balancer_class
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def node(name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def endpoint_slice(
    service_name: str, addresses: tuple[str, ...], namespace: str = "default", node_name: str = "n1"
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True}, "nodeName": node_name}
            for a in addresses
        ],
        "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
    }


def ingress(name: str, host: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": [{"host": host}]},
    }

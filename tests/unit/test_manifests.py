"""Kubernetes objects -> model: every refusal reason, defaults, files, the example folder."""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.cluster.files import FilesSource
from appliance.cluster.manifests import (
    ManifestError,
    build_state,
    object_from_dict,
    parse_text,
)
from appliance.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Ingress,
    Node,
    NodeAddress,
    Refusal,
    Service,
    ServicePort,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"


def svc(**spec: Any) -> dict[str, Any]:
    """A valid LoadBalancer Service; keyword arguments replace spec fields."""
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        },
    }
    base["spec"].update(spec)
    return base


def eps(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abcde",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["198.18.64.10"], "conditions": {"ready": True}, "nodeName": "node-1"}
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    base.update(fields)
    return base


def nod(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "198.18.0.11"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    base["status"].update(status)
    return base


def ing(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {"rules": [{"host": "shop.k8s.example.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.1"}]}},
    }
    base["spec"].update(spec)
    return base


def with_(obj: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    change(copied)
    return copied


def two_ports(**second: Any) -> list[dict[str, Any]]:
    return [
        {"name": "http", "port": 80, "nodePort": 30080},
        {"name": "https", "port": 443, "nodePort": 30443, **second},
    ]


# (id, object, the exact reason)
REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    # --- the object itself
    ("no-kind", {"apiVersion": "v1"}, "kind: required"),
    ("kind-type", {"apiVersion": "v1", "kind": 3}, "kind: must be a string, got 3"),
    ("no-apiversion", {"kind": "Service"}, "apiVersion: required"),
    (
        "apiversion-unknown",
        {"apiVersion": "v2", "kind": "Service"},
        'apiVersion: must be v1 for Service, got "v2"',
    ),
    (
        "slice-v2",
        eps(apiVersion="discovery.k8s.io/v2"),
        "apiVersion: must be discovery.k8s.io/v1 or discovery.k8s.io/v1beta1 for EndpointSlice,"
        ' got "discovery.k8s.io/v2"',
    ),
    # --- metadata
    ("no-name", with_(svc(), lambda o: o["metadata"].pop("name")), "metadata.name: required"),
    (
        "metadata-list",
        with_(svc(), lambda o: o.update(metadata=[])),
        "metadata: must be an object, got a list",
    ),
    (
        "name-upper",
        with_(svc(), lambda o: o["metadata"].update(name="Web")),
        "metadata.name: must be a DNS-1035 label (a-z, 0-9 and '-', starting with a letter),"
        ' got "Web"',
    ),
    (
        "name-digit-first",
        with_(svc(), lambda o: o["metadata"].update(name="1web")),
        "metadata.name: must be a DNS-1035 label (a-z, 0-9 and '-', starting with a letter),"
        ' got "1web"',
    ),
    (
        "namespace-bad",
        with_(svc(), lambda o: o["metadata"].update(namespace="Shop_1")),
        "metadata.namespace: must be a DNS-1123 label (a-z, 0-9 and '-', at most 63),"
        ' got "Shop_1"',
    ),
    (
        "label-int",
        with_(svc(), lambda o: o["metadata"]["labels"].update(version=1)),
        'metadata.labels["version"]: must be a string, got 1',
    ),
    (
        "label-key-int",
        with_(svc(), lambda o: o["metadata"]["labels"].update({1: "x"})),
        "metadata.labels: keys must be strings, got 1",
    ),
    (
        "annotations-list",
        with_(svc(), lambda o: o["metadata"].update(annotations=["a"])),
        "metadata.annotations: must be an object, got a list",
    ),
    (
        "uid-list",
        with_(svc(), lambda o: o["metadata"].update(uid=[1])),
        "metadata.uid: must be a string, got a list",
    ),
    # --- Service spec
    ("spec-str", with_(svc(), lambda o: o.update(spec="x")), 'spec: must be an object, got "x"'),
    (
        "type",
        svc(type="Balancer"),
        'spec.type: must be ClusterIP, NodePort, LoadBalancer or ExternalName, got "Balancer"',
    ),
    ("ports-str", svc(ports="80"), 'spec.ports: must be a list, got "80"'),
    ("no-ports", svc(ports=[]), "spec.ports: a LoadBalancer Service needs at least one port"),
    (
        "no-ports-clusterip",
        svc(type="ClusterIP", ports=None),
        "spec.ports: a ClusterIP Service needs at least one port",
    ),
    ("port-entry-int", svc(ports=[80]), "spec.ports[0]: must be an object, got 80"),
    ("port-missing", svc(ports=[{"name": "http"}]), "spec.ports[0].port: required"),
    (
        "port-range",
        svc(ports=two_ports(port=70000)),
        "spec.ports[1].port: must be 1-65535, got 70000",
    ),
    ("port-zero", svc(ports=[{"port": 0}]), "spec.ports[0].port: must be 1-65535, got 0"),
    ("port-str", svc(ports=[{"port": "80"}]), 'spec.ports[0].port: must be an integer, got "80"'),
    ("port-bool", svc(ports=[{"port": True}]), "spec.ports[0].port: must be an integer, got true"),
    ("port-float", svc(ports=[{"port": 80.5}]), "spec.ports[0].port: must be an integer, got 80.5"),
    (
        "protocol",
        svc(ports=[{"port": 80, "protocol": "HTTP"}]),
        'spec.ports[0].protocol: must be TCP, UDP or SCTP, got "HTTP"',
    ),
    (
        "protocol-lower",
        svc(ports=[{"port": 80, "protocol": "tcp"}]),
        'spec.ports[0].protocol: must be TCP, UDP or SCTP, got "tcp"',
    ),
    (
        "name-missing",
        svc(ports=[{"name": "http", "port": 80}, {"port": 443}]),
        "spec.ports[1].name: required when there is more than one port",
    ),
    (
        "name-duplicate",
        svc(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 443}]),
        'spec.ports[1].name: duplicate "http" (spec.ports[0])',
    ),
    (
        "port-name-invalid",
        svc(ports=[{"name": "HTTP", "port": 80}]),
        "spec.ports[0].name: must be a DNS-1123 label (a-z, 0-9 and '-', at most 63), got \"HTTP\"",
    ),
    (
        "port-duplicate",
        svc(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "TCP"}]),
        "spec.ports[1]: duplicate 80/TCP (spec.ports[0])",
    ),
    (
        "nodeport-range",
        svc(ports=[{"port": 80, "nodePort": 70000}]),
        "spec.ports[0].nodePort: must be 1-65535, got 70000",
    ),
    (
        "nodeport-clusterip",
        svc(type="ClusterIP", ports=[{"port": 80, "nodePort": 30080}]),
        "spec.ports[0].nodePort: only NodePort and LoadBalancer, this is ClusterIP",
    ),
    (
        "nodeport-duplicate",
        svc(ports=two_ports(nodePort=30080)),
        "spec.ports[1].nodePort: duplicate 30080/TCP (spec.ports[0])",
    ),
    (
        "targetport-range",
        svc(ports=[{"port": 80, "targetPort": 0x10000}]),
        "spec.ports[0].targetPort: must be 1-65535, got 65536",
    ),
    (
        "targetport-numeric-string",
        svc(ports=[{"port": 80, "targetPort": "8080"}]),
        "spec.ports[0].targetPort: must be a port number or an IANA service name"
        " (a-z, 0-9, '-', max 15), got \"8080\"",
    ),
    (
        "targetport-long-name",
        svc(ports=[{"port": 80, "targetPort": "a-very-long-port-name"}]),
        "spec.ports[0].targetPort: must be a port number or an IANA service name"
        " (a-z, 0-9, '-', max 15), got \"a-very-long-port-name\"",
    ),
    (
        "targetport-double-dash",
        svc(ports=[{"port": 80, "targetPort": "we--b"}]),
        "spec.ports[0].targetPort: must be a port number or an IANA service name"
        " (a-z, 0-9, '-', max 15), got \"we--b\"",
    ),
    (
        "targetport-list",
        svc(ports=[{"port": 80, "targetPort": [8080]}]),
        "spec.ports[0].targetPort: must be an integer, got a list",
    ),
    (
        "externalname-missing",
        svc(type="ExternalName", ports=None),
        "spec.externalName: required",
    ),
    (
        "externalname-invalid",
        svc(type="ExternalName", externalName="db_1.example.com", ports=None),
        "spec.externalName: must be a DNS-1123 subdomain (a-z, 0-9, '-' and '.'),"
        ' got "db_1.example.com"',
    ),
    (
        "externalname-clusterip",
        svc(
            type="ExternalName", externalName="db.example.com", clusterIP="198.18.96.1", ports=None
        ),
        "spec.clusterIP: must be empty for an ExternalName Service",
    ),
    (
        "clusterip-invalid",
        svc(clusterIP="198.18.96.300"),
        'spec.clusterIPs[0]: must be an IP address, got "198.18.96.300"',
    ),
    (
        "clusterip-leading-zero",
        svc(clusterIP="198.18.096.1"),
        'spec.clusterIPs[0]: must be an IP address, got "198.18.096.1"',
    ),
    (
        "clusterips-mismatch",
        svc(clusterIP="198.18.96.1", clusterIPs=["198.18.96.2"]),
        'spec.clusterIPs[0]: must match spec.clusterIP "198.18.96.1"',
    ),
    (
        "clusterips-same-family",
        svc(clusterIPs=["198.18.96.1", "198.18.96.2"]),
        "spec.clusterIPs: must be one IPv4 and one IPv6 address",
    ),
    (
        "clusterips-three",
        svc(clusterIPs=["198.18.96.1", "fd00:198:18:96::1", "198.18.96.2"]),
        "spec.clusterIPs: at most 2 (one per family), got 3",
    ),
    (
        "headless-lb",
        svc(clusterIP="None"),
        'spec.clusterIP: "None" (headless) is only for ClusterIP, not LoadBalancer',
    ),
    (
        "headless-mixed",
        svc(type="ClusterIP", clusterIPs=["None", "198.18.96.1"]),
        'spec.clusterIPs: "None" (headless) must be the only entry',
    ),
    (
        "lbip",
        svc(loadBalancerIP="198.18.100.x"),
        'spec.loadBalancerIP: must be an IP address, got "198.18.100.x"',
    ),
    (
        "lbip-zone",
        svc(loadBalancerIP="fe80::1%eth0"),
        'spec.loadBalancerIP: must be an IP address, got "fe80::1%eth0"',
    ),
    (
        "source-range",
        svc(loadBalancerSourceRanges=["198.18.0.0/33"]),
        "spec.loadBalancerSourceRanges[0]: must be a CIDR such as 198.18.0.0/24,"
        ' got "198.18.0.0/33"',
    ),
    (
        "source-range-no-mask",
        svc(loadBalancerSourceRanges=["198.18.0.1"]),
        'spec.loadBalancerSourceRanges[0]: must be a CIDR such as 198.18.0.0/24, got "198.18.0.1"',
    ),
    (
        "source-range-clusterip",
        svc(type="ClusterIP", ports=[{"port": 80}], loadBalancerSourceRanges=["198.18.0.0/16"]),
        "spec.loadBalancerSourceRanges: only for LoadBalancer, this is ClusterIP",
    ),
    (
        "source-range-annotation",
        with_(
            svc(),
            lambda o: o["metadata"].update(
                annotations={"service.beta.kubernetes.io/load-balancer-source-ranges": "x/8"}
            ),
        ),
        'metadata.annotations["service.beta.kubernetes.io/load-balancer-source-ranges"]:'
        ' must be a CIDR such as 198.18.0.0/24, got "x/8"',
    ),
    (
        "lb-class-clusterip",
        svc(type="ClusterIP", ports=[{"port": 80}], loadBalancerClass="x.io/lb"),
        "spec.loadBalancerClass: only for LoadBalancer, this is ClusterIP",
    ),
    (
        "status-ip",
        with_(svc(), lambda o: o.update(status={"loadBalancer": {"ingress": [{"ip": "nope"}]}})),
        'status.loadBalancer.ingress[0].ip: must be an IP address, got "nope"',
    ),
    (
        "status-ingress-dict",
        with_(svc(), lambda o: o.update(status={"loadBalancer": {"ingress": {"ip": "x"}}})),
        "status.loadBalancer.ingress: must be a list, got an object",
    ),
    ("family", svc(ipFamilies=["IPv5"]), 'spec.ipFamilies[0]: must be IPv4 or IPv6, got "IPv5"'),
    ("family-dup", svc(ipFamilies=["IPv4", "IPv4"]), "spec.ipFamilies[1]: duplicate IPv4"),
    (
        "family-policy",
        svc(ipFamilyPolicy="DualStack"),
        "spec.ipFamilyPolicy: must be SingleStack, PreferDualStack or RequireDualStack,"
        ' got "DualStack"',
    ),
    (
        "single-stack-two",
        svc(ipFamilyPolicy="SingleStack", ipFamilies=["IPv4", "IPv6"]),
        "spec.ipFamilyPolicy: SingleStack allows one family, this has two",
    ),
    (
        "family-mismatch",
        svc(clusterIPs=["198.18.96.1"], ipFamilies=["IPv6"]),
        "spec.clusterIPs[0]: 198.18.96.1 is not IPv6 (spec.ipFamilies[0])",
    ),
    (
        "etp",
        svc(externalTrafficPolicy="Global"),
        'spec.externalTrafficPolicy: must be Cluster or Local, got "Global"',
    ),
    (
        "etp-clusterip",
        svc(type="ClusterIP", ports=[{"port": 80}], externalTrafficPolicy="Local"),
        "spec.externalTrafficPolicy: Local is only for NodePort and LoadBalancer"
        ", this is ClusterIP",
    ),
    (
        "hcnp-cluster-policy",
        svc(healthCheckNodePort=32001),
        "spec.healthCheckNodePort: only for a LoadBalancer Service"
        " with externalTrafficPolicy Local",
    ),
    (
        "hcnp-range",
        svc(externalTrafficPolicy="Local", healthCheckNodePort=-1),
        "spec.healthCheckNodePort: must be 1-65535, got -1",
    ),
    (
        "affinity",
        svc(sessionAffinity="Cookie"),
        'spec.sessionAffinity: must be None or ClientIP, got "Cookie"',
    ),
    (
        "affinity-timeout",
        svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be 1-86400, got 0",
    ),
    (
        "affinity-timeout-big",
        svc(
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}},
        ),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be 1-86400, got 86401",
    ),
    (
        "affinity-config-without",
        svc(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}),
        "spec.sessionAffinityConfig: only with sessionAffinity ClientIP",
    ),
    (
        "allocate-str",
        svc(allocateLoadBalancerNodePorts="yes"),
        'spec.allocateLoadBalancerNodePorts: must be true or false, got "yes"',
    ),
    ("selector-int", svc(selector={"app": 1}), 'spec.selector["app"]: must be a string, got 1'),
    # --- EndpointSlice
    ("slice-no-type", eps(addressType=None), "addressType: required"),
    ("slice-type", eps(addressType="IPv5"), 'addressType: must be IPv4, IPv6 or FQDN, got "IPv5"'),
    (
        "slice-no-addresses",
        eps(endpoints=[{"addresses": []}]),
        "endpoints[0].addresses: required",
    ),
    (
        "slice-address-family",
        eps(endpoints=[{"addresses": ["fd00:198:18::1"]}]),
        'endpoints[0].addresses[0]: must be an IPv4 address, got "fd00:198:18::1"',
    ),
    (
        "slice-too-many",
        eps(endpoints=[{"addresses": [f"198.18.64.{i}" for i in range(101)]}]),
        "endpoints[0].addresses: at most 100, got 101",
    ),
    (
        "slice-ready-str",
        eps(endpoints=[{"addresses": ["198.18.64.1"], "conditions": {"ready": "true"}}]),
        'endpoints[0].conditions.ready: must be true or false, got "true"',
    ),
    (
        "slice-hostname",
        eps(endpoints=[{"addresses": ["198.18.64.1"], "hostname": "web.0"}]),
        "endpoints[0].hostname: must be a DNS-1123 label (a-z, 0-9 and '-', at most 63),"
        ' got "web.0"',
    ),
    (
        "slice-node-int",
        eps(endpoints=[{"addresses": ["198.18.64.1"], "nodeName": 1}]),
        "endpoints[0].nodeName: must be a string, got 1",
    ),
    ("slice-port-missing", eps(ports=[{"name": "http"}]), "ports[0].port: required"),
    (
        "slice-port-protocol",
        eps(ports=[{"port": 80, "protocol": "ICMP"}]),
        'ports[0].protocol: must be TCP, UDP or SCTP, got "ICMP"',
    ),
    (
        "slice-port-dup-name",
        eps(ports=[{"port": 80}, {"port": 81}]),
        'ports[1].name: duplicate "" (ports[0])',
    ),
    (
        "slice-name",
        with_(eps(), lambda o: o["metadata"].update(name="Web_1")),
        "metadata.name: must be a DNS-1123 subdomain (a-z, 0-9, '-' and '.'), got \"Web_1\"",
    ),
    # --- core v1 Endpoints
    (
        "endpoints-ip",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy"},
            "subsets": [{"addresses": [{"ip": "host-1"}]}],
        },
        'subsets[0].addresses[0].ip: must be an IP address, got "host-1"',
    ),
    (
        "endpoints-mixed-family",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy"},
            "subsets": [{"addresses": [{"ip": "198.18.64.1"}, {"ip": "fd00:198:18::1"}]}],
        },
        "subsets[0].addresses[1].ip: fd00:198:18::1 is not IPv4 like the others",
    ),
    (
        "endpoints-port-names",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy"},
            "subsets": [{"ports": [{"name": "a", "port": 1}, {"port": 2}]}],
        },
        "subsets[0].ports[1].name: required when there is more than one port",
    ),
    (
        "endpoints-subset-ports",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy"},
            "subsets": [{"ports": [{"port": 1}]}, {"ports": [{"port": 2}]}],
        },
        "subsets[1].ports: differ from subsets[0].ports: write EndpointSlices for that",
    ),
    # --- Node
    (
        "node-address",
        nod(addresses=[{"type": "InternalIP", "address": "node-1"}]),
        'status.addresses[0].address: must be an IP address, got "node-1"',
    ),
    (
        "node-address-type",
        nod(addresses=[{"address": "198.18.0.1"}]),
        "status.addresses[0].type: required",
    ),
    (
        "node-conditions",
        nod(conditions={"Ready": "True"}),
        "status.conditions: must be a list, got an object",
    ),
    # --- Ingress
    (
        "ingress-host",
        ing(rules=[{"host": "Shop.example.com"}]),
        "spec.rules[0].host: must be a DNS-1123 subdomain (a-z, 0-9, '-' and '.'),"
        ' got "Shop.example.com"',
    ),
    (
        "ingress-class",
        ing(ingressClassName=5),
        "spec.ingressClassName: must be a string, got 5",
    ),
    (
        "ingress-rules",
        ing(rules={"host": "x"}),
        "spec.rules: must be a list, got an object",
    ),
]


@pytest.mark.parametrize(
    ("obj", "reason"), [(o, r) for _, o, r in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
def test_refusal_reason(obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(ManifestError) as raised:
        object_from_dict(obj, "x.yaml")
    assert str(raised.value) == reason


def test_refusal_ids_unique() -> None:
    ids = [i for i, _, _ in REFUSALS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
        {"apiVersion": "v1", "kind": "Pod"},
        {"apiVersion": "v1", "kind": "ConfigMap", "data": [1, 2]},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "spec": "anything"},
        {"apiVersion": "example.io/v1", "kind": "Ingress"},
    ],
)
def test_kinds_we_do_not_use_are_ignored(obj: dict[str, Any]) -> None:
    assert object_from_dict(obj) is None


def test_service_defaults() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }
    s = object_from_dict(obj, "web.yaml")
    assert s == Service(
        namespace="default",
        name="web",
        type="ClusterIP",
        ports=(ServicePort("", "TCP", 80, 80, None),),
        source="web.yaml",
    )
    assert isinstance(s, Service)
    assert s.session_affinity_timeout == 10800
    assert s.allocate_load_balancer_node_ports is True
    assert s.external_traffic_policy == "Cluster"


def test_service_every_field() -> None:
    obj = svc(
        clusterIP="198.18.96.15",
        clusterIPs=["198.18.96.15", "fd00:198:18:96:0::15"],
        ipFamilyPolicy="RequireDualStack",
        externalTrafficPolicy="Local",
        healthCheckNodePort=32001,
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
        loadBalancerIP="198.18.101.2",
        loadBalancerSourceRanges=["198.18.5.7/24", " fd00:198:18::/48"],
        loadBalancerClass="appliance.io/lb",
        allocateLoadBalancerNodePorts=False,
        ports=[
            {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 0},
            {"name": "sctp", "port": 9, "protocol": "SCTP", "targetPort": 9999},
        ],
    )
    obj["metadata"].update(
        uid="u-1",
        resourceVersion=12,
        creationTimestamp="2026-11-03T10:01:05Z",
        annotations={"appliance.io/address-pool": "reserved"},
    )
    obj["status"] = {
        "loadBalancer": {
            "ingress": [{"ip": "198.18.101.2"}, {"hostname": "lb.example.com"}, {"ip": ""}]
        }
    }
    s = object_from_dict(obj, "shop.yaml#2")
    assert s == Service(
        namespace="shop",
        name="web",
        type="LoadBalancer",
        ports=(
            ServicePort("http", "TCP", 80, "http", 30080),
            ServicePort("dns", "UDP", 53, 53, None),
            ServicePort("sctp", "SCTP", 9, 9999, None),
        ),
        uid="u-1",
        creation_timestamp="2026-11-03T10:01:05Z",
        resource_version="12",
        labels={"app": "web"},
        annotations={"appliance.io/address-pool": "reserved"},
        selector={"app": "web"},
        cluster_ips=("198.18.96.15", "fd00:198:18:96::15"),
        ip_families=("IPv4", "IPv6"),
        ip_family_policy="RequireDualStack",
        external_traffic_policy="Local",
        health_check_node_port=32001,
        session_affinity="ClientIP",
        session_affinity_timeout=600,
        load_balancer_source_ranges=("198.18.5.0/24", "fd00:198:18::/48"),
        load_balancer_class="appliance.io/lb",
        load_balancer_ip="198.18.101.2",
        allocate_load_balancer_node_ports=False,
        status_ingress_ips=("198.18.101.2",),
        source="shop.yaml#2",
    )


SOURCE_RANGES = "198.18.0.0/16, 10.1.2.3/8"


def test_service_kinds() -> None:
    headless = object_from_dict(svc(type="ClusterIP", clusterIP="None", ports=None))
    assert isinstance(headless, Service)
    assert headless.headless and headless.cluster_ips == () and headless.ports == ()
    ext = object_from_dict(svc(type="ExternalName", externalName="db.example.com.", ports=None))
    assert isinstance(ext, Service) and ext.external_name == "db.example.com"
    annotated = with_(
        svc(),
        lambda o: o["metadata"].update(
            annotations={"service.beta.kubernetes.io/load-balancer-source-ranges": SOURCE_RANGES}
        ),
    )
    s = object_from_dict(annotated)
    assert isinstance(s, Service)
    assert s.load_balancer_source_ranges == ("198.18.0.0/16", "10.0.0.0/8")
    stamped = with_(
        svc(),
        lambda o: o["metadata"].update(
            creationTimestamp=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        ),
    )
    s = object_from_dict(stamped)
    assert isinstance(s, Service) and s.creation_timestamp == "2026-01-02T03:04:05Z"


def test_endpoint_slice_conditions() -> None:
    obj = eps(
        endpoints=[
            {"addresses": ["198.18.64.1"]},
            {"addresses": ["198.18.64.2"], "conditions": {"ready": False}},
            {
                "addresses": ["198.18.64.3"],
                "conditions": {"ready": False, "serving": True, "terminating": True},
                "nodeName": "node-2",
                "hostname": "web-2",
            },
            {"addresses": ["198.18.64.4"], "conditions": {"ready": None, "serving": None}},
        ],
        ports=[{"name": "", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
    )
    s = object_from_dict(obj, "e.yaml")
    assert s == EndpointSlice(
        namespace="shop",
        name="web-abcde",
        service_name="web",
        address_type="IPv4",
        endpoints=(
            Endpoint(("198.18.64.1",), True, True, False),
            Endpoint(("198.18.64.2",), False, False, False),
            Endpoint(("198.18.64.3",), False, True, True, "node-2", "web-2"),
            Endpoint(("198.18.64.4",), True, True, False),
        ),
        ports=(EndpointPort("", 8080, "TCP"), EndpointPort("dns", 53, "UDP")),
        source="e.yaml",
    )


def test_endpoint_slice_v1beta1_topology_and_fqdn() -> None:
    obj = eps(
        apiVersion="discovery.k8s.io/v1beta1",
        addressType="FQDN",
        endpoints=[
            {"addresses": ["db.example.com"], "topology": {"kubernetes.io/hostname": "node-3"}}
        ],
    )
    s = object_from_dict(obj)
    assert isinstance(s, EndpointSlice)
    assert s.address_type == "FQDN"
    assert s.endpoints == (Endpoint(("db.example.com",), node_name="node-3"),)


def test_endpoints_fallback_conversion() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "subsets": [
            {
                "addresses": [{"ip": "198.18.64.50", "nodeName": "node-1", "hostname": "pg-0"}],
                "notReadyAddresses": [{"ip": "198.18.64.51"}],
                "ports": [{"name": "postgres", "port": 5432}],
            },
            {
                "addresses": [{"ip": "198.18.64.52"}],
                "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP"}],
            },
        ],
    }
    s = object_from_dict(obj, "legacy.yaml")
    assert s == EndpointSlice(
        namespace="shop",
        name="legacy",
        service_name="legacy",
        address_type="IPv4",
        endpoints=(
            Endpoint(("198.18.64.50",), True, True, False, "node-1", "pg-0"),
            Endpoint(("198.18.64.51",), False, False, False),
            Endpoint(("198.18.64.52",), True, True, False),
        ),
        ports=(EndpointPort("postgres", 5432, "TCP"),),
        source="legacy.yaml",
        legacy=True,
    )


def test_node_and_ingress() -> None:
    n = object_from_dict(
        nod(
            addresses=[
                {"type": "InternalIP", "address": "198.18.0.11"},
                {"type": "InternalIP", "address": "fd00:198:18:0::11"},
                {"type": "Hostname", "address": "node-1"},
            ]
        ),
        "nodes.yaml",
    )
    assert n == Node(
        "node-1",
        (
            NodeAddress("InternalIP", "198.18.0.11"),
            NodeAddress("InternalIP", "fd00:198:18::11"),
            NodeAddress("Hostname", "node-1"),
        ),
        True,
        {"kubernetes.io/hostname": "node-1"},
        "nodes.yaml",
    )
    not_ready = object_from_dict(nod(conditions=[{"type": "Ready", "status": "Unknown"}]))
    assert isinstance(not_ready, Node) and not not_ready.ready
    never = object_from_dict(nod(conditions=None))
    assert isinstance(never, Node) and not never.ready
    i = object_from_dict(
        with_(
            ing(rules=[{"host": "shop.k8s.example.com"}, {"host": "*.k8s.example.com"}, {}]),
            lambda o: o["metadata"].update(annotations={"kubernetes.io/ingress.class": "nginx"}),
        ),
        "ingress.json",
    )
    assert i == Ingress(
        "shop",
        "storefront",
        ("shop.k8s.example.com", "*.k8s.example.com"),
        ("198.18.100.1",),
        "nginx",
        "ingress.json",
    )


# --- parse_text ----------------------------------------------------------------------


def test_multi_document_sources_and_nulls() -> None:
    text = "\n---\n".join(
        [
            yaml.safe_dump(svc()),
            "",  # an empty document: skipped, but counted
            "# only a comment",
            yaml.safe_dump(svc(ports=[{"port": 70000}])),
            yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            yaml.safe_dump(eps()),
        ]
    )
    objects, refused = parse_text(text, "shop.yaml")
    assert [(type(o).__name__, o.source) for o in objects] == [
        ("Service", "shop.yaml#1"),
        ("EndpointSlice", "shop.yaml#6"),
    ]
    assert refused == [
        Refusal(
            "Service",
            "shop",
            "web",
            "spec.ports[0].port: must be 1-65535, got 70000",
            "shop.yaml#4",
        )
    ]


def test_single_document_source_has_no_number() -> None:
    objects, refused = parse_text(yaml.safe_dump(svc()), "web.yaml")
    assert [o.source for o in objects] == ["web.yaml"] and refused == []


def test_list_kinds() -> None:
    kubectl = {"apiVersion": "v1", "kind": "List", "items": [svc(), nod(), 5]}
    objects, refused = parse_text(yaml.safe_dump(kubectl), "all.yaml")
    assert [o.source for o in objects] == ["all.yaml items[0]", "all.yaml items[1]"]
    assert refused == [
        Refusal(
            "Object",
            "",
            "",
            "object: must be an object with apiVersion and kind, got 5",
            "all.yaml items[2]",
        )
    ]
    # The API's typed lists leave kind and apiVersion out of their items.
    bare = {k: v for k, v in nod().items() if k not in ("kind", "apiVersion")}
    api = {"apiVersion": "v1", "kind": "NodeList", "items": [bare]}
    objects, refused = parse_text(json.dumps(api), "nodes.json")
    assert [type(o) for o in objects] == [Node] and refused == []
    nested = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "List", "items": []}]}
    objects, refused = parse_text(json.dumps(nested), "n.json")
    assert objects == [] and [r.reason for r in refused] == [
        "items: a List inside a List is not read"
    ]
    not_list = {"apiVersion": "v1", "kind": "List", "items": {"a": 1}}
    objects, refused = parse_text(json.dumps(not_list), "n.json")
    assert objects == [] and [r.reason for r in refused] == [
        "items: a List inside a List is not read"
    ]


def test_json_file() -> None:
    objects, refused = parse_text(json.dumps(ing(), indent=2), "ingress.json")
    assert [o.source for o in objects] == ["ingress.json"] and refused == []


def test_yaml_syntax_error_keeps_documents_before() -> None:
    text = yaml.safe_dump(svc()) + "---\nkind: Service\nspec:\n  type: x\n  ports: 80: 90\n"
    objects, refused = parse_text(text, "b.yaml")
    assert [o.name for o in objects if isinstance(o, Service)] == ["web"]
    assert [o.source for o in objects] == ["b.yaml#1"]
    line = text.splitlines().index("  ports: 80: 90") + 1
    (refusal,) = refused
    assert (refusal.kind, refusal.namespace, refusal.name, refusal.source) == (
        "File",
        "",
        "b.yaml",
        f"b.yaml:{line}",
    )
    # ours: the prefix and the place; the problem after it is PyYAML's wording
    assert re.fullmatch(
        rf"YAML syntax error at line {line}, column 12: \S[^\n]*", refusal.reason
    ), refusal.reason


def test_bad_json_reports_yaml_error_with_line() -> None:
    objects, refused = parse_text('{\n  "kind": "Service",\n  "spec": {\n}', "x.json")
    assert objects == []
    assert [r.kind for r in refused] == ["File"] and "line" in refused[0].reason


def test_timestamps_stay_text_and_top_level_junk() -> None:
    svc_yaml = yaml.safe_dump(svc()).replace(
        "metadata:", "metadata:\n  creationTimestamp: 2026-11-03T10:01:05Z"
    )
    objects, _ = parse_text(svc_yaml, "a.yaml")
    assert isinstance(objects[0], Service)
    assert objects[0].creation_timestamp == "2026-11-03T10:01:05Z"
    for junk in ("just a string", "- 1\n- 2", "42", "[[[[[[" * 3, "{{{"):
        objects, refused = parse_text(junk, "j.yaml")
        assert objects == [] and len(refused) == 1, junk
    deep = "[" * 5000 + "]" * 5000
    objects, refused = parse_text(deep, "deep.json")
    assert objects == [] and len(refused) == 1


# --- build_state ---------------------------------------------------------------------


def _slice(name: str, service: str, legacy: bool = False, source: str = "") -> EndpointSlice:
    return EndpointSlice("shop", name, service, source=source, legacy=legacy)


def test_build_state_groups_sorts_and_falls_back() -> None:
    web = Service("shop", "web", "ClusterIP", source="a.yaml")
    objects = [
        web,
        _slice("web-b", "web"),
        _slice("web-a", "web"),
        _slice("web", "web", legacy=True),  # ignored: web has slices
        _slice("legacy", "legacy", legacy=True),  # used: no slice for legacy
        _slice("orphan", ""),  # no service-name label: belongs to nothing
    ]
    state = build_state(objects, [])
    assert list(state.services) == ["shop/web"]
    assert {k: [s.name for s in v] for k, v in state.endpoint_slices.items()} == {
        "shop/legacy": ["legacy"],
        "shop/web": ["web-a", "web-b"],
    }
    assert state.refused == ()


def test_build_state_duplicates() -> None:
    first = Service("shop", "web", "ClusterIP", source="a.yaml")
    second = Service("shop", "web", "NodePort", source="b.yaml#2")
    old = Service(
        "shop", "web", "ClusterIP", creation_timestamp="2026-01-01T00:00:00Z", source="c.yaml"
    )
    n1, n2 = Node("node-1", source="n.yaml"), Node("node-1", source="m.yaml")
    given = Refusal("File", "", "x.yaml", "cannot read: Permission denied", "x.yaml")
    state = build_state([first, second, n1, n2], [given])
    assert state.services["shop/web"] is first
    assert state.nodes["node-1"] is n1
    assert state.refused == (
        given,
        Refusal("Service", "shop", "web", "duplicate: already defined in a.yaml", "b.yaml#2"),
        Refusal("Node", "", "node-1", "duplicate: already defined in n.yaml", "m.yaml"),
    )
    # The one created first stays, wherever it was read.
    state = build_state([first, old], [])
    assert state.services["shop/web"] is old
    assert [str(r) for r in state.refused] == [
        "Service shop/web: duplicate: already defined in c.yaml (a.yaml)"
    ]
    # A slice and an Endpoints of the same name are different kinds, not duplicates.
    state = build_state([_slice("web", "web"), _slice("web", "web", legacy=True)], [])
    assert state.refused == ()


def test_build_state_reuses_unchanged_slice_tuples() -> None:
    a, b = _slice("web-a", "web"), _slice("web-b", "web")
    c = _slice("echo-a", "echo")
    first = build_state([a, b, c], [])
    again = build_state([b, a, c], [], previous=first)
    assert again.endpoint_slices["shop/web"] is first.endpoint_slices["shop/web"]
    changed = build_state([a, _slice("web-b", "web"), c], [], previous=first)
    assert changed.endpoint_slices["shop/web"] is not first.endpoint_slices["shop/web"]
    assert changed.endpoint_slices["shop/echo"] is first.endpoint_slices["shop/echo"]


# --- the example folder --------------------------------------------------------------


def test_example_folder() -> None:
    state = FilesSource(EXAMPLES).load()
    assert sorted(state.services) == [
        f"shop/{n}"
        for n in sorted(
            [
                "web",
                "web-headless",
                "cache",
                "web-nodeport",
                "web-lb",
                "echo",
                "dual",
                "legacy",
                "db",
                "legacy-lb",
            ]
        )
    ]
    assert sorted(state.nodes) == ["node-1", "node-2", "node-3"]
    assert all(n.ready for n in state.nodes.values())
    assert [a.address for a in state.nodes["node-2"].addresses if a.type == "InternalIP"] == [
        "198.18.0.12",
        "fd00:198:18::12",
    ]
    assert list(state.ingresses) == ["shop/storefront"]
    assert state.ingresses["shop/storefront"].hosts == (
        "shop.k8s.example.com",
        "api.k8s.example.com",
    )
    assert state.ingresses["shop/storefront"].status_ips == ("198.18.100.0",)
    assert len(state.endpoint_slices) == 9
    assert state.endpoint_slices["shop/legacy"][0].legacy
    assert not any(s.legacy for s in state.endpoint_slices["shop/web"])
    cache = state.endpoint_slices["shop/cache"][0]
    assert [e.hostname for e in cache.endpoints] == ["cache-0", "cache-1"]
    web = state.endpoint_slices["shop/web"][0]
    assert [(e.addresses, e.node_name) for e in web.endpoints] == [
        (("198.18.64.10",), "node-1"),
        (("198.18.64.11",), "node-1"),
        (("198.18.64.70",), "node-2"),
    ]

    assert state.services["shop/web-lb"].status_ingress_ips == ("198.18.100.0",)
    echo = state.services["shop/echo"]
    assert echo.external_traffic_policy == "Local" and echo.health_check_node_port == 32001
    assert (echo.session_affinity, echo.session_affinity_timeout) == ("ClientIP", 600)
    assert [(p.name, p.protocol, p.port, p.node_port) for p in echo.ports] == [
        ("http", "TCP", 80, 30090),
        ("echo-udp", "UDP", 7, 30007),
    ]
    assert echo.annotations["appliance.io/load-balancer-ips"] == "198.18.101.2"
    lb = state.services["shop/web-lb"]
    assert [(p.port, p.node_port) for p in lb.ports] == [(80, 30081), (443, 30443)]
    assert state.services["shop/web-headless"].headless
    assert state.services["shop/db"].external_name == "db.example.com"
    assert state.services["shop/dual"].ip_families == ("IPv4", "IPv6")
    assert state.services["shop/legacy-lb"].load_balancer_ip == "198.18.99.9"
    assert state.services["shop/web"].source == "shop.yaml#5"

    refusals = [str(r) for r in state.refused]
    # the syntax error's problem text is PyYAML's (libyaml's) wording: check ours around it
    syntax = re.compile(
        r"File broken\.yaml: YAML syntax error at line 21, column 3: \S[^\n]* \(broken\.yaml:21\)"
    )
    assert len(refusals) == 6 and syntax.fullmatch(refusals[4]), refusals
    assert refusals[:4] + refusals[5:] == [
        "Service shop/bad-port: spec.ports[0].port: must be 1-65535, got 70000 (bad.yaml#1)",
        'Service shop/bad-protocol: spec.ports[0].protocol: must be TCP, UDP or SCTP, got "HTTP"'
        " (bad.yaml#2)",
        "Service shop/no-ports: spec.ports: a LoadBalancer Service needs at least one port"
        " (bad.yaml#3)",
        "Service shop/(no name): metadata.name: required (bad.yaml#4)",
        "Service shop/web: duplicate: already defined in shop.yaml#5 (bad.yaml#5)",
    ]


def test_example_comments_match_refusals() -> None:
    """bad.yaml says, above each object, the reason it is refused with."""
    state = FilesSource(EXAMPLES).load()
    comments = [
        line.removeprefix("# Refused: ").split(". ")[0]
        for line in (EXAMPLES / "bad.yaml").read_text().splitlines()
        if line.startswith("# Refused: ")
    ]
    reasons = [r.reason for r in state.refused if r.source.startswith("bad.yaml")]
    assert sorted(comments) == sorted(reasons)


# --- never anything but a ManifestError ----------------------------------------------

VALID = [svc(), eps(), nod(), ing()]
with open(EXAMPLES / "shop.yaml") as _f:
    VALID += [d for d in yaml.safe_load_all(_f) if d and d.get("kind") == "Service"]
with open(EXAMPLES / "endpoints.yaml") as _f:
    VALID += yaml.safe_load(_f)["items"]

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(["None", "", "TCP", "IPv6", "LoadBalancer", "Local", "::1", "1.2.3.4/8"]),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    obj = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        if not path:
            obj = draw(JUNK) if draw(st.integers(0, 9)) == 0 else obj
            continue
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "number"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "number":
            parent[path[-1]] = draw(st.sampled_from([0, -1, 65536, 70000, 86401, 2**64, 1.5]))
        else:
            parent[path[-1]] = draw(JUNK)
    return obj


def _check_values(result: Any) -> None:
    """What comes out is well typed: no junk passes through validation."""
    if isinstance(result, Service):
        for p in result.ports:
            assert type(p.port) is int and 1 <= p.port <= 65535
            assert p.protocol in ("TCP", "UDP", "SCTP")
            assert p.node_port is None or 1 <= p.node_port <= 65535
        assert all(isinstance(v, str) for v in result.labels.values())
        assert all(isinstance(v, str) for v in result.selector.values())
        assert 1 <= result.session_affinity_timeout <= 86400
        assert result.type in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    elif isinstance(result, EndpointSlice):
        for e in result.endpoints:
            assert e.addresses and all(isinstance(a, str) for a in e.addresses)
            assert isinstance(e.ready, bool) and isinstance(e.serving, bool)
        for port in result.ports:
            assert type(port.port) is int and 1 <= port.port <= 65535


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_objects_are_refused_with_a_reason(obj: Any) -> None:
    try:
        result = object_from_dict(obj, "m.yaml")
    except ManifestError as e:
        text = str(e)
        assert ": " in text and text.split(": ", maxsplit=1)[0] and "\n" not in text
        return
    _check_values(result)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abk:-[]{}'\"#&*!|>%@ \n\t01", max_size=200))
def test_random_text_never_raises(text: str) -> None:
    objects, refused = parse_text(text, "r.yaml")
    assert all(isinstance(r, Refusal) and r.reason for r in refused)
    assert all(isinstance(o, Service | EndpointSlice | Node | Ingress) for o in objects)


def test_error_is_value_error() -> None:
    assert issubclass(ManifestError, ValueError)


DEEP = {
    "flow": "kind: Service\nspec: " + "[" * 60_000 + "]" * 60_000 + "\n",
    "unclosed": "a: " + "[" * 60_000,
    "mappings": "a: " + "{a: " * 60_000 + "}" * 60_000,
    "block": "- " * 60_000 + "x\n",
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_hostile_nesting_is_a_refusal_not_a_crash(name: str) -> None:
    """libyaml's composer would segfault the whole process on these: run in a child so a
    regression fails this test instead of killing the session."""
    import subprocess
    import sys

    good = yaml.safe_dump(svc())
    code = (
        "import sys\n"
        "from appliance.cluster.manifests import parse_text\n"
        "objects, refused = parse_text(sys.stdin.read(), 'deep.yaml')\n"
        "print(len(objects), [r.reason for r in refused])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=good + "---\n" + DEEP[name],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("1 ")  # the document before still counts
    assert "YAML nested over 1000 levels deep" in done.stdout or "YAML syntax error" in done.stdout

"""The DNS suite runs on loopback (no namespaces needed): our server and knotd on free
ports >= 10000 of 127.0.0.1, asked by kdig and dig."""

from __future__ import annotations

import shutil

import pytest

from appliance.config import DnsConfig
from appliance.model import EndpointPort, ServicePort
from appliance.plan import plan
from tests.unit.builders import config, ep, ingress, lb, pool, slice_, state

MISSING = [tool for tool in ("knotd", "kdig", "dig") if shutil.which(tool) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING),
    reason=f"needs {', '.join(MISSING)} (Debian: knot, knot-dnsutils, dnsutils)",
)

ZONES = ("cluster.local", "k8s.example.com")
DNS = DnsConfig(zones=ZONES, ttl=5, listen=(("127.0.0.1", 0),))  # 0: a free port


def cluster_records():
    """Records of a small cluster as plan() makes them: a dual-stack LoadBalancer with
    named ports, a headless Service with hostnames, one with 200 pods, ExternalNames in and
    out of our zones, Ingress hosts with a wildcard."""
    ports = (ServicePort("http", "TCP", 80, 8080, 30080), ServicePort("dns", "UDP", 53, 53, 30053))
    web = lb(
        "web",
        ports=ports,
        ip_family_policy="RequireDualStack",
        ip_families=("IPv4", "IPv6"),
    )
    db = lb("db", type="ClusterIP", headless=True, ports=(ServicePort("pg", "TCP", 5432),))
    big = lb("big", type="ClusterIP", headless=True, ports=(ServicePort("http", "TCP", 80),))
    ext = lb("ext", type="ExternalName", external_name="db.example.org", ports=())
    alias = lb("alias", type="ExternalName", external_name="web.shop.svc.cluster.local", ports=())
    slices = [
        slice_(
            "db",
            *(ep(f"198.18.2.{i}", "node-1", hostname=f"db-{i}") for i in range(3)),
            ports=(EndpointPort("pg", 5432),),
        ),
        slice_(
            "big",
            *(ep(f"198.18.3.{i}", "node-2") for i in range(200)),
            ports=(EndpointPort("http", 80),),
        ),
    ]
    ings = [
        ingress("shop", ("shop.k8s.example.com", "*.apps.k8s.example.com"), ("198.18.0.50",)),
    ]
    cfg = config(pool("default", "198.18.100.0/29", "fd00:198:18:100::/125"), dns=DNS)
    desired = plan(
        state(web, db, big, ext, alias, slices=slices, ingresses=ings),
        cfg,
    )
    return desired.records

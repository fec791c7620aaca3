"""How fast plan() is on a large cluster, from scratch and after one endpoint change.

A generated cluster: 10,000 LoadBalancer Services with 2 ports and 10 endpoints each, on
100 nodes; half use externalTrafficPolicy Cluster (every node a real server: 100 per
virtual service), half Local (the nodes with endpoints). The change is one endpoint of one
Local Service moving to another node, planned by the same Planner (as the daemon does).

Prints: bench: plan services=10000 full_s=<s> replan_one_change_s=<s>
The peer for comparison is the planner itself from scratch (full_s): there is no other
program that plans this.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import statistics
import time

from appliance.config import Config, Pool
from appliance.model import (
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    Service,
    ServicePort,
)
from appliance.plan import Planner


def generate(services: int, nodes: int, endpoints: int) -> ClusterState:
    node_objs = {
        f"node-{i}": Node(
            f"node-{i}",
            (
                NodeAddress(
                    "InternalIP",
                    str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + 10 + i)),
                ),
            ),
        )
        for i in range(nodes)
    }
    names = list(node_objs)
    svcs: dict[str, Service] = {}
    slices: dict[str, tuple[EndpointSlice, ...]] = {}
    for i in range(services):
        ns = f"ns-{i % 100}"
        name = f"svc-{i}"
        local = i % 2 == 1
        ports = (
            ServicePort("http", "TCP", 80, 8080, 30000 + (2 * i) % 2768),
            ServicePort("https", "TCP", 443, 8443, 30000 + (2 * i + 1) % 2768),
        )
        svcs[f"{ns}/{name}"] = Service(
            ns,
            name,
            "LoadBalancer",
            ports,
            uid=f"uid-{i:06d}",
            creation_timestamp=f"2026-01-01T00:{i // 600 % 60:02d}:{i // 10 % 60:02d}Z",
            cluster_ips=(str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.19.0.0")) + i)),),
            external_traffic_policy="Local" if local else "Cluster",
            health_check_node_port=32000 + i % 700 if local else None,
            session_affinity="ClientIP" if i % 5 == 0 else "None",
        )
        eps = tuple(
            Endpoint(
                (
                    str(
                        ipaddress.IPv4Address(
                            int(ipaddress.IPv4Address("198.18.128.0")) + i * endpoints + j
                        )
                    ),
                ),
                node_name=names[(i * 7 + j * 13) % nodes],
            )
            for j in range(endpoints)
        )
        slices[f"{ns}/{name}"] = (
            EndpointSlice(
                ns,
                f"{name}-abcde",
                name,
                "IPv4",
                eps,
                (EndpointPort("http", 8080), EndpointPort("https", 8443)),
            ),
        )
    return ClusterState(services=svcs, endpoint_slices=slices, nodes=node_objs)


def one_change(state: ClusterState, round_: int) -> ClusterState:
    """The same state with one endpoint of one Local Service on another node."""
    key = "ns-1/svc-1"
    (sl,) = state.endpoint_slices[key]
    moved = dataclasses.replace(sl.endpoints[0], node_name=f"node-{round_ % 100}")
    new = dataclasses.replace(sl, endpoints=(moved, *sl.endpoints[1:]))
    slices = dict(state.endpoint_slices)
    slices[key] = (new,)
    return dataclasses.replace(state, endpoint_slices=slices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    state = generate(args.services, args.nodes, args.endpoints)
    vip_pool = Pool(
        "bench",
        ((ipaddress.IPv4Address("198.18.192.0"), ipaddress.IPv4Address("198.18.255.255")),),
    )
    config = Config(pools=(vip_pool,))
    fulls, replans = [], []
    vs_count = rs_count = 0
    for r in range(args.rounds):
        planner = Planner(config)
        t0 = time.perf_counter()
        desired = planner.plan(state)
        fulls.append(time.perf_counter() - t0)
        changed = one_change(state, r + 1)
        t0 = time.perf_counter()
        after = planner.plan(changed)
        replans.append(time.perf_counter() - t0)
        vs_count = len(desired.virtual_services)
        rs_count = sum(len(vs.real_servers) for vs in desired.virtual_services)
        assert after.virtual_services != desired.virtual_services, "the change was not planned"
    print(
        f"bench: plan services={args.services} full_s={statistics.median(fulls):.3f} "
        f"replan_one_change_s={statistics.median(replans):.4f} "
        f"virtual_services={vs_count} real_servers={rs_count}"
    )


if __name__ == "__main__":
    main()

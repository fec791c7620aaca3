"""Domain types, in the words kube-proxy, IPVS and VRRP already use.

Everything here is a frozen value. Sources build these from Kubernetes objects,
`plan()` turns them into the desired state, adapters make the kernel match it.
Mappings inside frozen values are never mutated after construction; we keep
them as plain dicts for speed and treat them as read-only by convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from appliance import address

Family = address.Family  # "IPv4" | "IPv6", Kubernetes' word (ipFamilies)
family_of = address.family_of
Protocol = Literal["TCP", "UDP", "SCTP"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
TrafficPolicy = Literal["Cluster", "Local"]
Forwarding = Literal["nat", "dr", "tun"]
RType = Literal["A", "AAAA", "CNAME", "SRV"]
Health = Mapping[tuple[str, str], bool]
"""Health check results: (service "ns/name", node name) -> up. The service "" means the
node as a whole (kube-proxy's :10256/healthz). Absent means unknown, which counts as up:
a node is not drained before it was ever checked."""

PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh")
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, the Kubernetes default for ClientIP

ANNOTATION_PREFIX = "appliance.io/"
ANN_LOAD_BALANCER_IPS = "appliance.io/load-balancer-ips"
ANN_ADDRESS_POOL = "appliance.io/address-pool"
ANN_ALLOW_SHARED_IP = "appliance.io/allow-shared-ip"
ANN_SCHEDULER = "appliance.io/scheduler"
LABEL_EXCLUDE_FROM_LB = "node.kubernetes.io/exclude-from-external-load-balancers"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    protocol: Protocol
    port: int
    target_port: int | str | None = None
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: ServiceType
    ports: tuple[ServicePort, ...] = ()
    uid: str = ""
    creation_timestamp: str = ""  # RFC 3339 as the API writes it; sorts as text
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False  # clusterIP: None
    ip_families: tuple[Family, ...] = ()
    ip_family_policy: str | None = None  # SingleStack | PreferDualStack | RequireDualStack
    external_traffic_policy: TrafficPolicy = "Cluster"
    health_check_node_port: int | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    load_balancer_source_ranges: tuple[str, ...] = ()
    load_balancer_class: str | None = None
    load_balancer_ip: str | None = None  # spec.loadBalancerIP (deprecated upstream, still used)
    allocate_load_balancer_node_ports: bool = True
    external_name: str | None = None
    status_ingress_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip
    source: str = ""  # where it came from (a file), for messages
    key: str = field(init=False, repr=False, compare=False)  # "ns/name", used everywhere

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: Protocol = "TCP"


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """discovery.k8s.io/v1 EndpointSlice (core v1 Endpoints are converted to this)."""

    namespace: str
    name: str
    service_name: str
    address_type: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    source: str = ""
    legacy: bool = False  # converted from core v1 Endpoints: used only when no real slice exists

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service_name}"


@dataclass(frozen=True, slots=True)
class NodeAddress:
    type: str  # InternalIP | ExternalIP | Hostname ...
    address: str


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    addresses: tuple[NodeAddress, ...] = ()
    ready: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def excluded(self) -> bool:
        """Carries the label the service controller honours to keep LB traffic off a node."""
        return LABEL_EXCLUDE_FROM_LB in self.labels

    def address_for(self, family: Family) -> str | None:
        """The node's InternalIP of that family, else its ExternalIP (kube-proxy's choice)."""
        for kind in ("InternalIP", "ExternalIP"):
            for a in self.addresses:
                if a.type == kind and family_of(a.address) == family:
                    return a.address
        return None


@dataclass(frozen=True, slots=True)
class Ingress:
    namespace: str
    name: str
    hosts: tuple[str, ...] = ()
    status_ips: tuple[str, ...] = ()
    ingress_class: str | None = None
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An object we could not use, and why. Shown to the operator, never raised."""

    kind: str
    namespace: str
    name: str
    reason: str
    source: str = ""

    @property
    def ref(self) -> str:
        name = self.name or "(no name)"
        where = f"{self.namespace}/{name}" if self.namespace else name
        return f"{self.kind} {where}"

    def __str__(self) -> str:
        origin = f" ({self.source})" if self.source else ""
        return f"{self.ref}: {self.reason}{origin}"


@dataclass(frozen=True, slots=True)
class ClusterState:
    """One immutable snapshot of what the cluster says.

    Sources keep unchanged objects identical (the same Python object) from one
    snapshot to the next, so the planner can reuse its work per Service.
    """

    services: Mapping[str, Service] = field(default_factory=dict)  # "ns/name" -> Service
    endpoint_slices: Mapping[str, tuple[EndpointSlice, ...]] = field(
        default_factory=dict
    )  # service "ns/name" -> its slices
    nodes: Mapping[str, Node] = field(default_factory=dict)
    ingresses: Mapping[str, Ingress] = field(default_factory=dict)
    refused: tuple[Refusal, ...] = ()


# --- the desired state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealServer:
    """One destination of a virtual service: a node. Its port is the virtual service's
    `real_port` (the same NodePort on every node), so one RealServer can be shared by
    every virtual service that reaches that node with the same weight."""

    node: str
    address: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class VirtualService:
    """What `ipvsadm -A` describes: VIP:port/protocol with its scheduler and persistence."""

    vip: str
    port: int
    protocol: Protocol
    scheduler: str
    real_port: int  # NodePort in nat mode, the service port in dr/tun
    real_servers: tuple[RealServer, ...]
    service: str  # "ns/name"
    port_name: str = ""
    forwarding: Forwarding = "nat"
    persistence_timeout: int = 0  # seconds; 0 = no persistence (sessionAffinity None)
    # loadBalancerSourceRanges of this VIP's family; None = every client. An empty tuple
    # means nobody: the Service lists ranges, but none of this VIP's family.
    source_ranges: tuple[str, ...] | None = None
    traffic_policy: TrafficPolicy = "Cluster"
    health_check_node_port: int | None = None

    @property
    def family(self) -> Family:
        return family_of(self.vip)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.vip, self.port, self.protocol)

    @property
    def persistence_netmask(self) -> int:
        return 32 if self.family == "IPv4" else 128


@dataclass(frozen=True, slots=True)
class Allocation:
    """The VIPs a LoadBalancer Service was given, and from which pool(s)."""

    service: str
    addresses: tuple[str, ...]
    pools: tuple[str, ...]
    shared_key: str | None = None


@dataclass(frozen=True, slots=True)
class Vip:
    """A VIP to put on the wire: the announcer adds it on the host that owns its pool."""

    address: str
    pool: str
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One DNS resource record. `data` is the address (A/AAAA) or the target name
    (CNAME/SRV); names are lower case without the trailing dot."""

    name: str
    rtype: RType
    data: str
    ttl: int
    owner: str = ""  # "Service ns/name" or "Ingress ns/name"
    priority: int = 0  # SRV only
    weight: int = 0  # SRV only
    port: int = 0  # SRV only


@dataclass(frozen=True, slots=True)
class Problem:
    """Why (part of) an accepted object is not served as asked. Unlike a Refusal the
    object is still planned; the reason goes to the status page and a Kubernetes Event."""

    kind: str
    key: str  # "ns/name"
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.reason}"


@dataclass(frozen=True, slots=True)
class DesiredState:
    allocations: Mapping[str, Allocation]  # service key -> allocation
    virtual_services: tuple[VirtualService, ...]
    vips: tuple[Vip, ...]
    records: tuple[Record, ...]
    problems: tuple[Problem, ...]
    refused: tuple[Refusal, ...]

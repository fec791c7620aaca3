"""The typed configuration (`appliance.yaml`), as the rest of the code sees it.

`appliance.config.load` parses and validates YAML into these; everything else only reads them.
Durations are seconds (float), addresses are canonical text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from appliance.address import IPRange, family_of_version
from appliance.model import Family, Forwarding


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One matchExpressions entry of a Kubernetes label selector."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        get = labels.get
        for k, v in self.match_labels:
            if get(k) != v:
                return False
        for r in self.match_expressions:
            value = get(r.key)
            if r.operator == "In" and value not in r.values:
                return False
            if r.operator == "NotIn" and value is not None and value in r.values:
                return False
            if r.operator == "Exists" and value is None:
                return False
            if r.operator == "DoesNotExist" and value is not None:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Pool:
    """An address pool. `ranges` are inclusive first/last address pairs, in config order."""

    name: str
    ranges: tuple[IPRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False  # skip .0 and .255 (MetalLB's knob, for broken clients)
    namespaces: tuple[str, ...] = ()  # empty: any namespace
    service_selector: LabelSelector = field(default_factory=LabelSelector)

    @property
    def restricted(self) -> bool:
        return bool(self.namespaces) or not self.service_selector.empty

    @property
    def families(self) -> frozenset[Family]:
        return frozenset(family_of_version(r[0].version) for r in self.ranges)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    manifests: str | None = None  # a folder of YAML manifests (the embedded default)
    kubeconfig: str | None = None  # or the Kubernetes API
    load_balancer_class: str | None = None  # None: Services with no class are ours
    default_ip_family: Family = "IPv4"  # for manifests that do not say (the API server would)
    api_server: str | None = None  # or the API at this URL with token_file (+ ca_file)
    token_file: str | None = None
    ca_file: str | None = None
    lease_namespace: str = "appliance-system"  # the status writers' Lease lives here
    write_status: bool = True  # write VIPs to Service status and post Events (Lease holder)


@dataclass(frozen=True, slots=True)
class DataplaneConfig:
    backend: Literal["ipvs", "nftables", "auto"] = "auto"
    forwarding: Forwarding = "nat"
    scheduler: str = "rr"  # kube-proxy's IPVS default
    drain_timeout: float = 300.0
    interface: str | None = None  # where VIP traffic arrives (nftables dr); see config/dataplane


@dataclass(frozen=True, slots=True)
class VrrpInstance:
    name: str
    vrid: int
    priority: int = 100
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    pools: tuple[str, ...] = ()  # whose VIPs this instance owns; empty: every pool
    unicast_peers: tuple[str, ...] = ()
    # Accept adverts only from these sources (and the unicast peers); none: from anyone.
    peers: tuple[str, ...] = ()
    family: Family = "IPv4"
    v3_checksum_as_v2: bool = False  # IPv4: checksum without the pseudo-header (RFC 9568)
    use_vmac: bool = False  # IPv4: VIPs on a macvlan with the virtual router MAC (RFC 5798 7.3)

    @property
    def accepted_peers(self) -> tuple[str, ...]:
        """The sources whose adverts we accept; empty: any host on the LAN."""
        return tuple(dict.fromkeys(self.peers + self.unicast_peers))


@dataclass(frozen=True, slots=True)
class TrackInterface:
    name: str
    weight: int = 0  # 0: Fault while it is down (keepalived's track_interface default)


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """What this host can really serve (keepalived's track_interface / track_script). A
    failing cause adds its weight (<= 0) to every instance's priority; weight 0 puts the
    instances in Fault instead (they hold nothing)."""

    dataplane: int = -100  # while the dataplane cannot be programmed
    source: int = -100  # while the cluster source has been failing for longer than:
    source_after: float = 60.0
    interfaces: tuple[TrackInterface, ...] = ()

    def weights(self) -> dict[str, int]:
        """Cause -> weight; a cause is 'dataplane', 'source' or 'interface <name>'."""
        return {
            "dataplane": self.dataplane,
            "source": self.source,
            **{f"interface {i.name}": i.weight for i in self.interfaces},
        }


@dataclass(frozen=True, slots=True)
class HaConfig:
    interface: str | None = None  # None: no VRRP, this host owns every VIP
    instances: tuple[VrrpInstance, ...] = ()
    garp_count: int = 5
    garp_interval: float = 0.02
    garp_refresh: float = 0.0  # seconds between periodic GARP bursts; 0 = off
    track: TrackConfig = field(default_factory=TrackConfig)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    enabled: bool = True
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 5353),)
    zones: tuple[str, ...] = ("cluster.local",)
    ttl: int = 5
    cluster_ips: bool = False  # also serve ClusterIPs (reachable only inside the cluster)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool = True
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    kube_proxy_port: int = 10256  # kube-proxy's healthz (--healthz-bind-address), every node
    max_in_flight: int = 1024  # checks running at once, across every target


@dataclass(frozen=True, slots=True)
class WebConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    pools: tuple[Pool, ...] = ()
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dataplane: DataplaneConfig = field(default_factory=DataplaneConfig)
    ha: HaConfig = field(default_factory=HaConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    web: WebConfig = field(default_factory=WebConfig)
    # Where the daemon keeps what must survive a restart (the VIP allocations); the unit's
    # StateDirectory=appliance.
    state_dir: str = "/var/lib/appliance"
    source: str = ""  # the file it came from

"""One converter per kind we read: a Kubernetes object (a dict) -> a model value.

Each follows the API server's validation as users know it from kubectl's errors, so a
manifest that `kubectl apply` would refuse is refused here with the same complaint, and
applies the API server's defaults (type ClusterIP, protocol TCP, targetPort = port ...)
so a hand-written manifest means what it would mean in a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from appliance.cluster import fields as f
from appliance.model import (
    DEFAULT_AFFINITY_TIMEOUT,
    LABEL_SERVICE_NAME,
    PROTOCOLS,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Family,
    Ingress,
    Node,
    NodeAddress,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    family_of,
)

SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
FAMILIES: tuple[Family, ...] = ("IPv4", "IPv6")
FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# The older spelling of spec.loadBalancerSourceRanges; kube-proxy still honours it.
ANN_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges"
ANN_INGRESS_CLASS = "kubernetes.io/ingress.class"

NameRule = Callable[[Any, str], str]


def _metadata(obj: Mapping[str, Any], rule: NameRule, namespaced: bool) -> tuple[str, str, Any]:
    meta = f.mapping(obj.get("metadata"), "metadata")
    name = rule(meta.get("name"), "metadata.name")
    namespace = ""
    if namespaced:
        raw = meta.get("namespace")
        namespace = (
            "default" if raw is None or raw == "" else f.dns_label(raw, "metadata.namespace")
        )
    return namespace, name, meta


# --- Service -----------------------------------------------------------------------------


def service(obj: Mapping[str, Any], source: str) -> Service:
    namespace, name, meta = _metadata(obj, f.dns1035_label, namespaced=True)
    labels = f.string_map(meta.get("labels"), "metadata.labels")
    annotations = f.string_map(meta.get("annotations"), "metadata.annotations")
    spec = f.mapping(obj.get("spec"), "spec")
    kind = f.choice(spec.get("type"), "spec.type", SERVICE_TYPES, "ClusterIP")
    assert kind is not None  # a default was given
    external = kind in ("NodePort", "LoadBalancer")
    balanced = kind == "LoadBalancer"

    headless, cluster_ips = _cluster_ips(spec, kind)
    ports = _service_ports(spec.get("ports"), kind)
    if not ports and not headless and kind != "ExternalName":
        raise f.fail("spec.ports", f"a {kind} Service needs at least one port")
    external_name = _external_name(spec) if kind == "ExternalName" else None
    families, policy = _families(spec, cluster_ips)

    policy_path = "spec.externalTrafficPolicy"
    traffic = f.choice(spec.get("externalTrafficPolicy"), policy_path, ("Cluster", "Local"))
    if traffic == "Local" and not external:
        raise f.fail(policy_path, f"Local is only for NodePort and LoadBalancer, this is {kind}")
    health_port = _optional_port(spec.get("healthCheckNodePort"), "spec.healthCheckNodePort")
    if health_port is not None and not (balanced and traffic == "Local"):
        raise f.fail(
            "spec.healthCheckNodePort",
            "only for a LoadBalancer Service with externalTrafficPolicy Local",
        )

    affinity, timeout = _affinity(spec)

    lb_ip_raw = f.string(spec.get("loadBalancerIP"), "spec.loadBalancerIP")
    lb_ip = f.ip(lb_ip_raw, "spec.loadBalancerIP") if lb_ip_raw else None
    ranges_raw = f.items(spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges")
    if ranges_raw and not balanced:
        raise f.fail("spec.loadBalancerSourceRanges", f"only for LoadBalancer, this is {kind}")
    ranges = tuple(
        f.cidr(r, f"spec.loadBalancerSourceRanges[{i}]") for i, r in enumerate(ranges_raw)
    )
    if not ranges and balanced and annotations.get(ANN_SOURCE_RANGES, "").strip():
        path = f'metadata.annotations["{ANN_SOURCE_RANGES}"]'
        parts = [p for p in annotations[ANN_SOURCE_RANGES].split(",") if p.strip()]
        ranges = tuple(f.cidr(p, path) for p in parts)
    lb_class = f.string(spec.get("loadBalancerClass"), "spec.loadBalancerClass") or None
    if lb_class is not None and not balanced:
        raise f.fail("spec.loadBalancerClass", f"only for LoadBalancer, this is {kind}")
    allocate = f.boolean(
        spec.get("allocateLoadBalancerNodePorts"), "spec.allocateLoadBalancerNodePorts", True
    )

    status = f.mapping(obj.get("status"), "status")
    balancer = f.mapping(status.get("loadBalancer"), "status.loadBalancer")
    status_ips = _ingress_ips(balancer.get("ingress"), "status.loadBalancer.ingress")

    return Service(
        namespace=namespace,
        name=name,
        type=kind,
        ports=ports,
        uid=f.text(meta.get("uid"), "metadata.uid"),
        creation_timestamp=f.text(meta.get("creationTimestamp"), "metadata.creationTimestamp"),
        resource_version=f.text(meta.get("resourceVersion"), "metadata.resourceVersion"),
        labels=labels,
        annotations=annotations,
        selector=f.string_map(spec.get("selector"), "spec.selector"),
        cluster_ips=cluster_ips,
        headless=headless,
        ip_families=families,
        ip_family_policy=policy,
        external_traffic_policy="Local" if traffic == "Local" else "Cluster",
        health_check_node_port=health_port,
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        load_balancer_source_ranges=ranges,
        load_balancer_class=lb_class,
        load_balancer_ip=lb_ip,
        allocate_load_balancer_node_ports=allocate,
        external_name=external_name,
        status_ingress_ips=status_ips,
        source=source,
    )


def _optional_port(value: Any, path: str) -> int | None:
    # 0 is the API's "not set" (the server allocates one); anything else must be a port.
    if value == 0 and not isinstance(value, bool):
        return None
    return f.port_number(value, path)


def _cluster_ips(spec: Mapping[str, Any], kind: str) -> tuple[bool, tuple[str, ...]]:
    single = f.string(spec.get("clusterIP"), "spec.clusterIP") or ""
    many = f.items(spec.get("clusterIPs"), "spec.clusterIPs")
    raw = [f.required_string(v, f"spec.clusterIPs[{i}]") for i, v in enumerate(many)]
    if single and raw and raw[0] != single:
        raise f.fail("spec.clusterIPs[0]", f"must match spec.clusterIP {f.show(single)}")
    if not raw and single:
        raw = [single]
    if kind == "ExternalName":
        if raw:
            raise f.fail("spec.clusterIP", "must be empty for an ExternalName Service")
        return False, ()
    if "None" in raw:
        if raw != ["None"]:
            raise f.fail("spec.clusterIPs", '"None" (headless) must be the only entry')
        if kind != "ClusterIP":
            raise f.fail("spec.clusterIP", f'"None" (headless) is only for ClusterIP, not {kind}')
        return True, ()
    if len(raw) > 2:
        raise f.fail("spec.clusterIPs", f"at most 2 (one per family), got {len(raw)}")
    ips = tuple(f.ip(v, f"spec.clusterIPs[{i}]") for i, v in enumerate(raw))
    if len(ips) == 2 and family_of(ips[0]) == family_of(ips[1]):
        raise f.fail("spec.clusterIPs", "must be one IPv4 and one IPv6 address")
    return False, ips


def _service_ports(value: Any, kind: str) -> tuple[ServicePort, ...]:
    raw_ports = f.items(value, "spec.ports")
    external = kind in ("NodePort", "LoadBalancer")
    names: dict[str, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    node_ports: dict[tuple[int, str], int] = {}
    ports: list[ServicePort] = []
    for i, raw in enumerate(raw_ports):
        path = f"spec.ports[{i}]"
        entry, name, protocol, port = _port_entry(raw, "spec.ports", i, names, len(raw_ports) > 1)
        if (port, protocol) in numbers:
            other = numbers[(port, protocol)]
            raise f.fail(path, f"duplicate {port}/{protocol} (spec.ports[{other}])")
        numbers[(port, protocol)] = i
        target = _target_port(entry.get("targetPort"), f"{path}.targetPort", port)
        node_port = _optional_port(entry.get("nodePort"), f"{path}.nodePort")
        if node_port is not None:
            if not external:
                raise f.fail(f"{path}.nodePort", f"only NodePort and LoadBalancer, this is {kind}")
            if (node_port, protocol) in node_ports:
                other = node_ports[(node_port, protocol)]
                raise f.fail(
                    f"{path}.nodePort", f"duplicate {node_port}/{protocol} (spec.ports[{other}])"
                )
            node_ports[(node_port, protocol)] = i
        ports.append(ServicePort(name, protocol, port, target, node_port))
    return tuple(ports)


def _port_entry(
    raw: Any, path: str, i: int, names: dict[str, int], name_required: bool
) -> tuple[Mapping[str, Any], str, Protocol, int]:
    """The part of a port entry Services and EndpointSlices share: its name (a DNS label,
    unique, required when asked), protocol (TCP by default) and port number."""
    here = f"{path}[{i}]"
    entry = f.mapping(raw, here)
    name = f.string(entry.get("name"), f"{here}.name") or ""
    if name:
        f.dns_label(name, f"{here}.name")
    elif name_required:
        raise f.fail(f"{here}.name", "required when there is more than one port")
    if name in names:
        raise f.fail(f"{here}.name", f"duplicate {f.show(name)} ({path}[{names[name]}])")
    names[name] = i
    protocol = f.choice(entry.get("protocol"), f"{here}.protocol", PROTOCOLS, "TCP")
    assert protocol is not None
    port = f.port_number(entry.get("port"), f"{here}.port")
    if port is None:
        raise f.fail(f"{here}.port", "required")
    return entry, name, protocol, port


def _target_port(value: Any, path: str, port: int) -> int | str:
    # The API server defaults an unset (or zero) targetPort to the port itself.
    if value is None or value == "" or (value == 0 and not isinstance(value, bool)):
        return port
    if isinstance(value, str):
        return f.port_name(value, path)
    number = f.port_number(value, path)
    assert number is not None
    return number


def _external_name(spec: Mapping[str, Any]) -> str:
    name = f.required_string(spec.get("externalName"), "spec.externalName")
    # A trailing dot (fully qualified) is allowed; records carry names without it.
    bare = name[:-1] if name.endswith(".") else name
    return f.dns_subdomain(bare, "spec.externalName")


def _families(
    spec: Mapping[str, Any], cluster_ips: tuple[str, ...]
) -> tuple[tuple[Family, ...], str | None]:
    raw = f.items(spec.get("ipFamilies"), "spec.ipFamilies")
    families: list[Family] = []
    for i, value in enumerate(raw):
        path = f"spec.ipFamilies[{i}]"
        family = f.choice(value, path, FAMILIES)
        if family is None:
            raise f.wrong(path, "IPv4 or IPv6", value)
        if family in families:
            raise f.fail(path, f"duplicate {family}")
        families.append(family)
    policy = f.choice(spec.get("ipFamilyPolicy"), "spec.ipFamilyPolicy", FAMILY_POLICIES)
    if policy == "SingleStack" and (len(families) > 1 or len(cluster_ips) > 1):
        raise f.fail("spec.ipFamilyPolicy", "SingleStack allows one family, this has two")
    for i, address in enumerate(cluster_ips):
        if i < len(families) and families[i] != family_of(address):
            raise f.fail(
                f"spec.clusterIPs[{i}]", f"{address} is not {families[i]} (spec.ipFamilies[{i}])"
            )
    if not families:  # the API server fills them in from the cluster IPs
        families = [family_of(a) for a in cluster_ips]
    return tuple(families), policy


def _affinity(spec: Mapping[str, Any]) -> tuple[Any, int]:
    affinity = f.choice(
        spec.get("sessionAffinity"), "spec.sessionAffinity", ("None", "ClientIP"), "None"
    )
    config = f.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    client = f.mapping(config.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    timeout = f.integer(client.get("timeoutSeconds"), path, 1, 86400)
    if timeout is not None and affinity != "ClientIP":
        raise f.fail("spec.sessionAffinityConfig", "only with sessionAffinity ClientIP")
    return affinity, DEFAULT_AFFINITY_TIMEOUT if timeout is None else timeout


def _ingress_ips(value: Any, path: str) -> tuple[str, ...]:
    """status.loadBalancer.ingress[].ip; entries with only a hostname carry no address."""
    ips: list[str] = []
    for i, raw in enumerate(f.items(value, path)):
        entry = f.mapping(raw, f"{path}[{i}]")
        address = f.string(entry.get("ip"), f"{path}[{i}].ip")
        f.string(entry.get("hostname"), f"{path}[{i}].hostname")
        if address:
            canonical = f.ip(address, f"{path}[{i}].ip")
            if canonical not in ips:
                ips.append(canonical)
    return tuple(ips)


# --- EndpointSlice and core v1 Endpoints -------------------------------------------------


def endpoint_slice(obj: Mapping[str, Any], source: str) -> EndpointSlice:
    namespace, name, meta = _metadata(obj, f.dns_subdomain, namespaced=True)
    labels = f.string_map(meta.get("labels"), "metadata.labels")
    address_type = f.choice(obj.get("addressType"), "addressType", ADDRESS_TYPES)
    if address_type is None:
        raise f.fail("addressType", "required")
    endpoints: list[Endpoint] = []
    for i, raw in enumerate(f.items(obj.get("endpoints"), "endpoints")):
        path = f"endpoints[{i}]"
        entry = f.mapping(raw, path)
        addresses = f.items(entry.get("addresses"), f"{path}.addresses")
        if not addresses:
            raise f.fail(f"{path}.addresses", "required")
        if len(addresses) > 100:
            raise f.fail(f"{path}.addresses", f"at most 100, got {len(addresses)}")
        parsed = tuple(
            _slice_address(a, f"{path}.addresses[{j}]", address_type)
            for j, a in enumerate(addresses)
        )
        conditions = f.mapping(entry.get("conditions"), f"{path}.conditions")
        # nil ready means ready (consumers must assume so); nil serving follows ready.
        ready = f.boolean(conditions.get("ready"), f"{path}.conditions.ready", True)
        serving = f.boolean(conditions.get("serving"), f"{path}.conditions.serving", ready)
        terminating = f.boolean(
            conditions.get("terminating"), f"{path}.conditions.terminating", False
        )
        node_name = f.string(entry.get("nodeName"), f"{path}.nodeName")
        if not node_name and "topology" in entry:  # v1beta1 kept the node in topology
            topology = f.string_map(entry.get("topology"), f"{path}.topology")
            node_name = topology.get("kubernetes.io/hostname")
        hostname = _hostname(entry.get("hostname"), f"{path}.hostname")
        endpoints.append(Endpoint(parsed, ready, serving, terminating, node_name or None, hostname))
    ports = _endpoint_ports(obj.get("ports"), "ports", names_required=False)
    return EndpointSlice(
        namespace=namespace,
        name=name,
        service_name=labels.get(LABEL_SERVICE_NAME, ""),
        address_type=address_type,  # type: ignore[arg-type]  # one of ADDRESS_TYPES
        endpoints=tuple(endpoints),
        ports=ports,
        source=source,
    )


def _slice_address(value: Any, path: str, address_type: str) -> str:
    if address_type == "FQDN":
        return f.dns_subdomain(value, path)
    return f.ip(value, path, 4 if address_type == "IPv4" else 6)


def _hostname(value: Any, path: str) -> str | None:
    name = f.string(value, path)
    return f.dns_label(name, path) if name else None


def _endpoint_ports(value: Any, path: str, names_required: bool) -> tuple[EndpointPort, ...]:
    raw_ports = f.items(value, path)
    ports: list[EndpointPort] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(raw_ports):
        required = names_required and len(raw_ports) > 1
        _, name, protocol, port = _port_entry(raw, path, i, names, required)
        ports.append(EndpointPort(name, port, protocol))
    return tuple(ports)


def endpoints(obj: Mapping[str, Any], source: str) -> EndpointSlice:
    """core v1 Endpoints as one EndpointSlice named like it (and like its Service).

    One slice has one port list and one address family, so subsets that differ in
    either are refused with a pointer to EndpointSlices instead of silently merged."""
    namespace, name, _ = _metadata(obj, f.dns_subdomain, namespaced=True)
    ports: tuple[EndpointPort, ...] | None = None
    family: str | None = None
    result: list[Endpoint] = []
    for i, raw in enumerate(f.items(obj.get("subsets"), "subsets")):
        path = f"subsets[{i}]"
        subset = f.mapping(raw, path)
        these = _endpoint_ports(subset.get("ports"), f"{path}.ports", names_required=True)
        if ports is None:
            ports = these
        elif sorted(these, key=repr) != sorted(ports, key=repr):
            raise f.fail(
                f"{path}.ports", "differ from subsets[0].ports: write EndpointSlices for that"
            )
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, a in enumerate(f.items(subset.get(key), f"{path}.{key}")):
                here = f"{path}.{key}[{j}]"
                entry = f.mapping(a, here)
                address = f.ip(entry.get("ip"), f"{here}.ip")
                if family is None:
                    family = family_of(address)
                elif family_of(address) != family:
                    raise f.fail(f"{here}.ip", f"{address} is not {family} like the others")
                node_name = f.string(entry.get("nodeName"), f"{here}.nodeName") or None
                hostname = _hostname(entry.get("hostname"), f"{here}.hostname")
                result.append(Endpoint((address,), ready, ready, False, node_name, hostname))
    return EndpointSlice(
        namespace=namespace,
        name=name,
        service_name=name,
        address_type="IPv6" if family == "IPv6" else "IPv4",
        endpoints=tuple(result),
        ports=ports or (),
        source=source,
        legacy=True,
    )


# --- Node and Ingress --------------------------------------------------------------------


def node(obj: Mapping[str, Any], source: str) -> Node:
    _, name, meta = _metadata(obj, f.dns_subdomain, namespaced=False)
    labels = f.string_map(meta.get("labels"), "metadata.labels")
    status = f.mapping(obj.get("status"), "status")
    addresses: list[NodeAddress] = []
    for i, raw in enumerate(f.items(status.get("addresses"), "status.addresses")):
        path = f"status.addresses[{i}]"
        entry = f.mapping(raw, path)
        kind = f.required_string(entry.get("type"), f"{path}.type")
        address = f.required_string(entry.get("address"), f"{path}.address")
        if kind in ("InternalIP", "ExternalIP"):
            address = f.ip(address, f"{path}.address")
        addresses.append(NodeAddress(kind, address))
    ready = False  # no Ready condition: the node never reported, like kube-proxy sees it
    for i, raw in enumerate(f.items(status.get("conditions"), "status.conditions")):
        path = f"status.conditions[{i}]"
        entry = f.mapping(raw, path)
        condition = f.string(entry.get("type"), f"{path}.type")
        state = f.string(entry.get("status"), f"{path}.status")
        if condition == "Ready":
            ready = state == "True"
    return Node(name=name, addresses=tuple(addresses), ready=ready, labels=labels, source=source)


def ingress(obj: Mapping[str, Any], source: str) -> Ingress:
    namespace, name, meta = _metadata(obj, f.dns_subdomain, namespaced=True)
    annotations = f.string_map(meta.get("annotations"), "metadata.annotations")
    spec = f.mapping(obj.get("spec"), "spec")
    ingress_class = f.string(spec.get("ingressClassName"), "spec.ingressClassName") or None
    if ingress_class is None:  # the annotation that came before the field
        ingress_class = annotations.get(ANN_INGRESS_CLASS) or None
    hosts: list[str] = []
    for i, raw in enumerate(f.items(spec.get("rules"), "spec.rules")):
        path = f"spec.rules[{i}]"
        rule = f.mapping(raw, path)
        host = f.string(rule.get("host"), f"{path}.host")
        if host:
            f.dns_subdomain(host, f"{path}.host", wildcard=True)
            if host not in hosts:
                hosts.append(host)
    status = f.mapping(obj.get("status"), "status")
    balancer = f.mapping(status.get("loadBalancer"), "status.loadBalancer")
    return Ingress(
        namespace=namespace,
        name=name,
        hosts=tuple(hosts),
        status_ips=_ingress_ips(balancer.get("ingress"), "status.loadBalancer.ingress"),
        ingress_class=ingress_class,
        source=source,
    )

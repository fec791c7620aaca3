"""The `cluster` section: where Services come from (manifests, kubeconfig or api_server)."""

from __future__ import annotations

from typing import cast

from appliance.config.checker import Checker, join_key, resolve, short
from appliance.config.types import ClusterConfig
from appliance.config.values import FAMILIES, NAME
from appliance.model import Family


def read_cluster(c: Checker, value: object) -> ClusterConfig:
    path = "cluster"
    d = c.mapping(
        value,
        path,
        (
            "manifests",
            "kubeconfig",
            "load_balancer_class",
            "default_ip_family",
            "api_server",
            "token_file",
            "ca_file",
            "lease_namespace",
            "write_status",
        ),
    )
    manifests = c.string(d, "manifests", path, None, nullable=True)
    kubeconfig = c.string(d, "kubeconfig", path, None, nullable=True)
    api_server = c.string(d, "api_server", path, None, nullable=True)
    token_file = c.string(d, "token_file", path, None, nullable=True)
    ca_file = c.string(d, "ca_file", path, None, nullable=True)
    chosen = [k for k, v in (("manifests", manifests), ("kubeconfig", kubeconfig)) if v]
    if api_server is not None:
        chosen.append("api_server")
    if len(chosen) > 1 and "api_server" not in chosen:
        c.err(path, "set manifests or kubeconfig, not both")
    elif len(chosen) > 1:
        c.err(path, f"set one of manifests, kubeconfig and api_server, not {' and '.join(chosen)}")
    elif (
        d.get("manifests") is None
        and d.get("kubeconfig") is None
        and d.get("api_server") is None
        and isinstance(value, dict | None)
    ):
        c.err(path, "set manifests (a folder of YAML files) or kubeconfig (or 'in-cluster')")
    if api_server is not None:
        if not api_server.startswith(("https://", "http://")):
            c.err(join_key(path, "api_server"), f"must be an https:// URL, got {short(api_server)}")
        if token_file is None:
            c.err(path, "api_server needs token_file (a ServiceAccount token)")
    elif token_file is not None or ca_file is not None:
        c.err(path, "token_file and ca_file go with api_server")
    if manifests is not None:
        manifests = resolve(c, manifests)
    if kubeconfig is not None and kubeconfig != "in-cluster":
        kubeconfig = resolve(c, kubeconfig)
    lease_namespace = c.string(d, "lease_namespace", path, "appliance-system")
    if lease_namespace is not None and not NAME.fullmatch(lease_namespace):
        c.err(
            join_key(path, "lease_namespace"),
            "must be a namespace name (lower case letters, digits, '-'), "
            f"got {short(lease_namespace)}",
        )
    return ClusterConfig(
        manifests=manifests,
        kubeconfig=kubeconfig,
        load_balancer_class=c.string(d, "load_balancer_class", path, None, nullable=True),
        default_ip_family=cast(Family, c.choice(d, "default_ip_family", path, "IPv4", FAMILIES)),
        api_server=api_server.rstrip("/") if api_server else None,
        token_file=resolve(c, token_file) if token_file else None,
        ca_file=resolve(c, ca_file) if ca_file else None,
        lease_namespace=lease_namespace or "appliance-system",
        write_status=c.boolean(d, "write_status", path, True),
    )

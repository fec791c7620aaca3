"""The cluster keys the Kubernetes API source adds to appliance.yaml, and how a
connection is read from the config, a kubeconfig or a pod's service account."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ClusterConfig, ConfigError, parse_config
from appliance.kube.api import (
    KubeConfigError,
    connection_from_config,
    from_kubeconfig,
    in_cluster,
)

REPO = Path(__file__).resolve().parents[2]
POOLS = [{"name": "default", "addresses": ["198.18.100.0/28"]}]
NEW_KEYS = ("api_server", "token_file", "ca_file", "lease_namespace", "write_status")


def cluster_of(cluster: dict[str, Any]) -> ClusterConfig:
    return parse_config({"cluster": cluster, "pools": POOLS}).cluster


def errors_of(cluster: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config({"cluster": cluster, "pools": POOLS})
    return info.value.errors


def test_defaults() -> None:
    c = cluster_of({"kubeconfig": "in-cluster"})
    assert (c.api_server, c.token_file, c.ca_file) == (None, None, None)
    assert c.lease_namespace == "appliance-system"
    assert c.write_status is True


def test_api_server_with_token_and_ca() -> None:
    c = cluster_of(
        {
            "api_server": "https://198.18.0.1:6443/",
            "token_file": "/etc/appliance/token",
            "ca_file": "/etc/appliance/ca.crt",
            "lease_namespace": "lb",
            "write_status": False,
        }
    )
    assert c.api_server == "https://198.18.0.1:6443"
    assert (c.token_file, c.ca_file, c.lease_namespace, c.write_status) == (
        "/etc/appliance/token",
        "/etc/appliance/ca.crt",
        "lb",
        False,
    )
    conn = connection_from_config(c)
    assert (conn.server, conn.token_file, conn.ca_file) == (
        "https://198.18.0.1:6443",
        "/etc/appliance/token",
        "/etc/appliance/ca.crt",
    )


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        (
            {"api_server": "https://a:6443", "kubeconfig": "k"},
            "cluster: set one of manifests, kubeconfig and api_server, not kubeconfig and "
            "api_server",
        ),
        ({"api_server": "https://a:6443"}, "cluster: api_server needs token_file"),
        (
            {"api_server": "a:6443", "token_file": "t"},
            "cluster.api_server: must be an https:// URL, got 'a:6443'",
        ),
        ({"kubeconfig": "k", "token_file": "t"}, "cluster: token_file and ca_file go with"),
        (
            {"kubeconfig": "k", "lease_namespace": "Bad_NS"},
            "cluster.lease_namespace: must be a namespace name",
        ),
        ({"kubeconfig": "k", "write_status": "yes"}, "cluster.write_status: must be true or"),
    ],
)
def test_errors(cluster: dict[str, Any], error: str) -> None:
    errors = errors_of(cluster)
    assert any(line.startswith(error) for line in errors), errors


def test_docs_list_the_new_keys() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `cluster\.([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(NEW_KEYS) <= documented


# --- kubeconfig and in-cluster ------------------------------------------------------------

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write_kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> None:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "lb"}}
                ],
                "current-context": "x",
            }
        )
    )


def test_kubeconfig_with_token_and_ca_data(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    ca = base64.b64encode(PEM.encode()).decode()
    write_kubeconfig(
        path,
        {"token": "abc"},
        {"server": "https://198.18.0.1:6443/", "certificate-authority-data": ca},
    )
    conn = from_kubeconfig(str(path))
    assert (conn.server, conn.token, conn.ca_data, conn.namespace) == (
        "https://198.18.0.1:6443",
        "abc",
        PEM,
        "lb",
    )


def test_kubeconfig_relative_files_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    write_kubeconfig(
        path,
        {"client-certificate": "c.pem", "client-key": "k.pem", "tokenFile": "tok"},
        {"server": "https://h:6443", "certificate-authority": "ca.pem"},
    )
    conn = from_kubeconfig(str(path))
    assert conn.ca_file == str(tmp_path / "ca.pem")
    assert (conn.cert_file, conn.key_file) == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert conn.token_file == str(tmp_path / "tok")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{{", "not YAML"),
        ("[]", "not a kubeconfig"),
        ("clusters: []", "no current-context"),
        ("current-context: x\ncontexts: []", "no context named 'x'"),
    ],
)
def test_bad_kubeconfig_is_one_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "kc"
    path.write_text(text)
    with pytest.raises(KubeConfigError) as info:
        from_kubeconfig(str(path))
    assert error in str(info.value)
    assert "\n" not in str(info.value)


def test_kubeconfig_with_exec_plugin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    write_kubeconfig(path, {"exec": {"command": "aws"}}, {"server": "https://h:6443"})
    with pytest.raises(KubeConfigError, match="appliance kubeconfig"):
        from_kubeconfig(str(path))


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read"):
        from_kubeconfig(str(tmp_path / "nope"))


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "namespace").write_text("appliance-system\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00:198:18::1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = in_cluster(env, tmp_path)
    assert conn.server == "https://[fd00:198:18::1]:443"
    assert conn.token_file == str(tmp_path / "token")
    assert conn.ca_file == str(tmp_path / "ca.crt")
    assert conn.namespace == "appliance-system"
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({}, tmp_path)

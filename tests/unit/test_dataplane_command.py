"""`appliance apply --dry-run`: config + manifests -> plan() -> the program, printed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.commands.apply import register

CONFIG = """\
cluster:
  manifests: manifests
pools:
  - name: lab
    addresses: [198.18.32.0/28]
"""
MANIFESTS = """\
apiVersion: v1
kind: Node
metadata: {name: node1}
status:
  addresses: [{type: InternalIP, address: 198.18.31.2}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1], nodeName: node1, conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"""


def site(tmp_path: Path) -> Path:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "web.yaml").write_text(MANIFESTS)
    (tmp_path / "appliance.yaml").write_text(CONFIG)
    return tmp_path / "appliance.yaml"


def run(*argv: str) -> int:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["apply", *argv])
    args.config = args.config_opt
    code: int = args.func(args)
    return code


def test_dry_run_nftables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path)
    assert run("--config", str(config), "--dataplane", "nftables", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("add table inet appliance\n")
    assert "198.18.32.0 . 80 . 0 : 198.18.31.2 . 30080" in out


def test_dry_run_ipvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path)
    assert run("--config", str(config), "--dataplane", "ipvs", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out == "-A -t 198.18.32.0:80 -s rr\n-a -t 198.18.32.0:80 -r 198.18.31.2:30080 -m -w 1\n"


def test_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [{name: x, addresses: [banana]}]\n")
    assert run("--config", str(bad), "--dry-run") == 2
    assert "bad config" in capsys.readouterr().err

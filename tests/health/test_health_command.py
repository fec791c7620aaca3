"""`appliance health targets|check`, run as a separate process against manifests and real
servers on loopback (aiohttp's, acting as kube-proxy)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.health.backends import Backend, free_port

REPO = Path(__file__).resolve().parents[2]
# `appliance/cli.py` wires the subcommand in; here the test builds the parser itself, so it
# does not depend on that wiring.
RUN = """
import argparse, sys
from appliance.commands.health import register
p = argparse.ArgumentParser(prog="appliance")
register(p.add_subparsers())
a = p.parse_args(sys.argv[1:])
sys.exit(a.func(a))
"""


def appliance(*args: str) -> list[str]:
    return [sys.executable, "-c", RUN, "health", *args]


def write_cluster(tmp: Path, hcnp: int) -> Path:
    nodes = "".join(
        f"""---
apiVersion: v1
kind: Node
metadata: {{name: node-{i}}}
status:
  addresses: [{{type: InternalIP, address: 127.0.0.1{i}}}]
  conditions: [{{type: Ready, status: "True"}}]
"""
        for i in (1, 2)
    )
    (tmp / "m").mkdir()
    (tmp / "m" / "cluster.yaml").write_text(
        nodes
        + f"""---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: {hcnp}
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: shop
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints:
  - addresses: [198.18.64.1]
    conditions: {{ready: true}}
    nodeName: node-1
  - addresses: [198.18.64.2]
    conditions: {{ready: true}}
    nodeName: node-2
ports: [{{name: http, port: 8080, protocol: TCP}}]
"""
    )
    config = tmp / "appliance.yaml"
    config.write_text(
        """cluster: {manifests: m}
pools: [{name: default, addresses: [198.18.100.0/28]}]
health: {interval: 100ms, timeout: 50ms, rise: 1, fall: 2}
"""
    )
    return config


def test_targets_of_the_examples() -> None:
    out = subprocess.run(
        appliance("targets", "-c", "examples/appliance.yaml", "-o", "json"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert {(r["service"], r["node"], r["kind"]) for r in rows} >= {
        ("", "node-1", "kube-proxy-node"),
        ("shop/echo", "node-1", "kube-proxy"),
    }
    assert all(r["endpoint"].startswith("http://198.18.") for r in rows)


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("health: {rise: 0}\n")
    out = subprocess.run(
        appliance("targets", "-c", str(bad)), check=False, cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"appliance health: bad config {bad}: ")
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_check_reports_each_verdict_against_real_servers(tmp_path: Path) -> None:
    async def go() -> None:
        addresses = ["127.0.0.11", "127.0.0.12"]
        hcnp = free_port(addresses)
        config = write_cluster(tmp_path, hcnp)
        up, down = Backend("127.0.0.11", hcnp), Backend("127.0.0.12", hcnp)
        down.b.mode = "503"
        await up.start()
        await down.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                *appliance("check", "-c", str(config), "-s", "1", "-o", "json"),
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await proc.communicate()
        finally:
            await up.stop()
            await down.stop()
        assert proc.returncode == 1, stderr  # something is down
        rows = {r["node"]: r for r in json.loads(stdout)}
        assert rows["node-1"]["verdict"] == "up"
        assert rows["node-2"]["verdict"] == "down"
        assert rows["node-2"]["last_error"] == "503: no local endpoints"
        assert rows["node-1"]["checks"] >= 2

    asyncio.run(go())

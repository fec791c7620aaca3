"""The lab (appliance/lab) as the end-to-end tests use it: namespaces `aane2e-*`, the
nodes' stand-in kube-proxy, and the appliance daemon run directly on lb1 and lb2 (children
of the test: `--lb processes`). `make demo` runs the same lab with systemd containers and
Ansible; these tests look at what crosses the wire, with observers of their own: curl and
dig from the client, nft counters in the nodes' namespaces, `nft list` on the LB hosts,
Chromium on the page."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from appliance.lab.lab import Lab
from tests.health.backends import free_port
from tests.support.netns import why_no_netns

PREFIX = "aane2e-"
HERE = Path(__file__).parent
REPO = HERE.parents[1]
T = TypeVar("T")
# Our own counters of new connections per NodePort, read in each node's namespace: which
# nodes the LB hosts really sent clients to, whatever the appliance thinks it did.
OBSERVED_PORTS = (30081, 30090)


class E2E:
    def __init__(self, lab: Lab, web_ports: list[int]) -> None:
        self.lab = lab
        self.web_ports = web_ports  # lb1's and lb2's pages on this machine's 127.0.0.1

    def wait(self, what: str, cond: Callable[[], T | None], limit: float = 20.0) -> T:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.lab.state.glob("*.log"))
        )
        raise AssertionError(f"never happened: {what}\n{logs}")

    def state(self, lb: str = "lb1") -> dict[str, Any] | None:
        return self.lab.api_state(lb)

    def vip(self, service: str, port: int = 80) -> str:
        s = self.wait(f"a VIP for {service}", lambda: self.state() or None)
        for svc in s["services"]:
            for p in svc["ports"]:
                if svc["key"] == service and p["port"] == port and "." in p["vip"]:
                    return str(p["vip"])
        raise AssertionError(f"{service} has no IPv4 VIP on port {port}: {s['services']}")

    def get(self, vip: str, port: int = 80) -> str:
        """One request from the client; the answering pod's line ('' if none answered)."""
        done = self.lab.run_in(
            "client", "curl", "-s", "--max-time", "1", f"http://{vip}:{port}/", timeout=5
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    def observe(self) -> None:
        """(Re)start the per-node counters of new connections to OBSERVED_PORTS."""
        rules = "\n".join(
            f"add rule inet e2e-observe pre tcp dport {p} ct state new counter"
            for p in OBSERVED_PORTS
        )
        script = (
            "table inet e2e-observe\ndelete table inet e2e-observe\n"
            "add table inet e2e-observe\n"
            "add chain inet e2e-observe pre { type filter hook prerouting priority -150; }\n"
            + rules + "\n"
        )  # fmt: skip
        for node in ("node-1", "node-2", "node-3"):
            done = subprocess.run(
                ["ip", "netns", "exec", self.lab.netns(node), "nft", "-f", "-"],
                input=script, capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr

    def new_connections(self, port: int) -> dict[str, int]:
        """Per node, the new connections to a NodePort since observe()."""
        out: dict[str, int] = {}
        for node in ("node-1", "node-2", "node-3"):
            done = subprocess.run(
                ["ip", "netns", "exec", self.lab.netns(node), "nft", "-j", "list", "table",
                 "inet", "e2e-observe"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            for item in json.loads(done.stdout)["nftables"]:
                rule = item.get("rule")
                if not rule:
                    continue
                exprs = rule["expr"]
                dport = next(
                    e["match"]["right"]
                    for e in exprs
                    if e.get("match", {}).get("left", {}).get("payload", {}).get("field") == "dport"
                )
                if dport == port:
                    out[node] = next(e["counter"]["packets"] for e in exprs if "counter" in e)
        return out

    def edit_endpoints(self, change: Callable[[list[dict[str, Any]]], None]) -> float:
        """Change the lab's endpoints.yaml (its list of EndpointSlices) and replace the file
        at once, as an editor or kubectl would; the monotonic time of the replace."""
        path = self.lab.manifests / "endpoints.yaml"
        doc = yaml.safe_load(path.read_text())
        change(doc["items"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, path)
        return time.monotonic()

    @contextlib.contextmanager
    def nft_events(self, lb: str = "lb1") -> Iterator[Callable[[Callable[[str], bool]], float]]:
        """`nft monitor` on an LB host: yields wait(match) -> the monotonic time the kernel
        reported the first ruleset change whose line matches (a reader thread stamps each
        line as it arrives, so the figure does not depend on how fast we poll)."""
        mon = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.netns(lb), "nft", "monitor", "rules"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )  # fmt: skip
        lines: queue.Queue[tuple[float, str]] = queue.Queue()

        def read() -> None:
            assert mon.stdout is not None
            for line in mon.stdout:
                lines.put((time.monotonic(), line))

        threading.Thread(target=read, daemon=True).start()

        def wait(match: Callable[[str], bool]) -> float:
            end = time.monotonic() + 5
            while (left := end - time.monotonic()) > 0:
                try:
                    at, line = lines.get(timeout=left)
                except queue.Empty:
                    break
                if match(line):
                    return at
            raise AssertionError("no matching ruleset change in 5 s")

        try:
            time.sleep(0.2)  # the monitor subscribes before anything changes
            yield wait
        finally:
            mon.terminate()
            mon.wait()

    def lb_rules(self, lb: str = "lb1") -> str:
        done = self.lab.run_in(lb, "nft", "list", "table", "inet", "appliance")
        return done.stdout

    def page(self, port: int, shot: Path) -> dict[str, Any]:
        shot.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, str(HERE / "adm_page.py"), f"http://127.0.0.1:{port}/", str(shot)],
            capture_output=True, text=True, timeout=90, cwd=REPO, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    why = why_no_netns(PREFIX, ("ip", "nft", "curl", "dig", "unshare"))
    if why:
        pytest.skip(why)
    lab = Lab(PREFIX, state_root=tmp_path_factory.mktemp("lab"))
    lab.down()  # a lab of a crashed earlier run
    ports = [free_port(["127.0.0.1"]), free_port(["127.0.0.1"])]
    lab.up(lb="processes", web_ports=ports)
    try:
        e = E2E(lab, ports)

        def synced(lb: str) -> bool:  # a page can answer before its VRRP state
            state = e.state(lb) or {}
            return bool(state.get("ready") and state.get("vrrp"))

        e.wait(
            "lb1 master, both hosts synced",
            lambda: lab.master() == "lb1" and synced("lb1") and synced("lb2"),
        )
        yield e
    finally:
        lab.down()

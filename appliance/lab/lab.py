"""Bring the lab up and down: namespaces, the nodes' stand-in kube-proxy, the LB hosts.

The LB hosts come in three kinds:
- `containers` (`make demo`): a podman container with systemd per host, joined to the
  host's namespace (`--network ns:/run/netns/<ns>`); Ansible installs the appliance there.
- `processes` (tests/e2e): `appliance run` started directly in the host's namespace, with
  the config `lb_config()` writes; children of the caller.
- `none`: only the network and the nodes.

Everything the lab starts is recorded in its state folder (/run/appliance-lab/<name>), and
everything it made is found again by name (namespaces and containers share the prefix), so
`down` cleans up after a crash of anything, itself included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from appliance.lab import image as lab_image
from appliance.lab import topology
from appliance.lab.topology import Host

LbKind = Literal["containers", "processes", "none"]
STATE_ROOT = Path("/run/appliance-lab")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
WEB_PORT = 8080  # the page inside the lab, on every LB host
DNS_PORT = 53
VRRP_PRIORITY = {"lb1": 100, "lb2": 90}  # lb1 is master while it lives


def lb_config(h: Host, manifests: Path) -> dict[str, Any]:
    """appliance.yaml for an LB host of the lab (what inventories/lab gives Ansible)."""
    return {
        "cluster": {"manifests": str(manifests)},
        "pools": [
            {"name": "default", "addresses": ["198.18.100.0/28", "fd00:198:18:100::/124"]},
            {"name": "reserved", "addresses": ["198.18.101.0/29"], "auto_assign": False},
        ],
        "dataplane": {"backend": "nftables", "forwarding": "nat", "scheduler": "rr"},
        "ha": {
            "interface": "eth0",
            "instances": [
                {
                    "name": "vi-1",
                    "vrid": 51,
                    "priority": VRRP_PRIORITY[h.name],
                    "advert_interval": "100ms",
                    "family": "IPv4",
                    "pools": ["default", "reserved"],
                },
                {  # VRRPv3 runs per family, as keepalived's instances do
                    "name": "vi-6",
                    "vrid": 52,
                    "priority": VRRP_PRIORITY[h.name],
                    "advert_interval": "100ms",
                    "family": "IPv6",
                    "pools": ["default"],
                },
            ],
        },
        "dns": {"listen": [f"0.0.0.0:{DNS_PORT}"], "zones": ["cluster.local", "k8s.example.com"]},
        "health": {"interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2},
        "web": {"listen": f"0.0.0.0:{WEB_PORT}"},
    }


@dataclass
class Lab:
    prefix: str = topology.DEFAULT_PREFIX
    state_root: Path = STATE_ROOT
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.state_root / self.prefix.rstrip("-")

    @property
    def manifests(self) -> Path:
        return self.state / "manifests"

    def netns(self, host: str) -> str:
        return topology.netns_name(self.prefix, host)

    def container(self, host: str) -> str:
        return f"{self.prefix}{host}"

    # --- up --------------------------------------------------------------------------

    def up(
        self,
        lb: LbKind = "containers",
        manifests: Path = EXAMPLES,
        web_ports: Sequence[int] = (),
    ) -> None:
        """Build the lab; on any failure, take down what was built and raise."""
        if topology.existing(self.prefix) or self.state.exists():
            raise RuntimeError(
                f"a lab named {self.prefix!r} exists already: `appliance lab down` first"
            )
        try:
            self.state.mkdir(parents=True)
            shutil.copytree(manifests, self.manifests)
            topology.build(self.prefix)
            for n in topology.nodes():
                self._start(
                    n.name,
                    n.name,
                    [sys.executable, "-m", "appliance.lab.node", "--node", n.name,
                     "--manifests", str(self.manifests)],
                )  # fmt: skip
            if lb == "containers":
                self._containers()
            elif lb == "processes":
                for h in topology.lbs():
                    self.start_daemon(h.name)
            for h, port in zip(topology.lbs(), web_ports, strict=False):
                self._start(
                    f"web-{h.name}",
                    None,
                    [sys.executable, "-m", "appliance.lab.forward",
                     "--listen", f"127.0.0.1:{port}", "--netns", self.netns("client"),
                     "--to", f"{h.ipv4}:{WEB_PORT}"],
                )  # fmt: skip
            self._write_info({"lb": lb, "web_ports": list(web_ports)})
        except BaseException:
            self.down()
            raise

    def _start(self, name: str, host: str | None, argv: list[str], ready: bool = True) -> int:
        """Start a lab process (in a host's namespace), wait for its `ready` line, record it."""
        if host is not None:
            argv = ["ip", "netns", "exec", self.netns(host), *argv]
        log = (self.state / f"{name}.log").open("ab")
        p = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if ready else log,  # the daemon logs to stdout
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at `lab up` must not take the lab with it
        )
        log.close()
        self.children[name] = p
        self._record(name, p.pid)
        if ready and p.stdout is not None:
            line = p.stdout.readline().decode(errors="replace").strip()
            if line != "ready":
                p.kill()
                p.wait()
                tail = (self.state / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"lab: {name} did not start:\n{tail}")
            p.stdout.close()
        return p.pid

    def start_daemon(self, lb: str) -> subprocess.Popen[bytes]:
        """`appliance run` in an LB host's namespace (lb=processes)."""
        h = topology.host(lb)
        config = self.state / f"{lb}.yaml"
        # Each host its own allocations file, in the lab's state (not this machine's
        # /var/lib/appliance, which both hosts would share).
        document = {**lb_config(h, self.manifests), "state_dir": str(self.state / lb)}
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        exe = Path(sys.executable).parent / "appliance"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "appliance.daemon"]
        # A UTS namespace of its own, so the page and the logs name the host as a real
        # (or containerised) LB host would, not after this machine.
        uts = ["unshare", "--uts", "sh", "-c", f'hostname {lb} && exec "$@"', "sh"]
        self._start(
            f"appliance-{lb}", lb, [*uts, *argv, "run", "--config", str(config)], ready=False
        )
        return self.children[f"appliance-{lb}"]

    def _containers(self) -> None:
        why = lab_image.why_not()
        if why:
            raise RuntimeError(f"lab: the LB hosts need podman: {why}")
        name = lab_image.image()
        for h in topology.lbs():
            ns = self.netns(h.name)
            lab_image.podman(
                "run", "-d", "--name", self.container(h.name), "--hostname", h.name,
                "--network", f"ns:/run/netns/{ns}", "--systemd", "always",
                "--cap-add", "SYS_ADMIN,NET_ADMIN,NET_RAW",
                "--label", f"appliance-lab={self.prefix}",
                name, "/sbin/init",
            )  # fmt: skip
        for h in topology.lbs():
            _wait_systemd(self.container(h.name))

    # --- faults -------------------------------------------------------------------------

    def fail(self, lb: str) -> list[str]:
        """The LB host goes away as in a power cut: its cable pulled (the switch's port down,
        so nobody hears its adverts or ARP replies) and its daemon killed with its VRRP
        process (SIGKILL to the group: no resignation). Its kernel keeps what it had, as a
        dead host's would."""
        self._lb_host(lb)
        done = [f"link {lb} down on the LAN"]
        topology.set_cable(self.prefix, lb, up=False)
        if self.info().get("lb") == "containers":
            lab_image.podman("kill", self.container(lb), check=False)
            done.append(f"container {self.container(lb)} killed")
            return done
        pid = self._pids().get(f"appliance-{lb}")
        child = self.children.get(f"appliance-{lb}")
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # its own session (_start)
            if child is not None and child.pid == pid:
                child.wait()
            done.append(f"daemon {pid} killed")
        return done

    def heal(self, lb: str) -> list[str]:
        """The host comes back: its cable in, its daemon (or its container's systemd) started."""
        self._lb_host(lb)
        topology.set_cable(self.prefix, lb, up=True)
        done = [f"link {lb} up on the LAN"]
        if self.info().get("lb") == "containers":
            lab_image.podman("start", self.container(lb))
            _wait_systemd(self.container(lb))
            return [*done, f"container {self.container(lb)} started"]
        pid = self._pids().get(f"appliance-{lb}")
        if pid is None or not _alive(pid):
            done.append(f"daemon {self.start_daemon(lb).pid} started")
        return done

    def _lb_host(self, lb: str) -> None:
        if lb not in {h.name for h in topology.lbs()}:
            raise KeyError(
                f"no LB host {lb!r} (LB hosts: {', '.join(h.name for h in topology.lbs())})"
            )
        if not self.state.exists():
            raise RuntimeError(f"no lab named {self.prefix!r}: `appliance lab up` first")

    # --- the record of what runs --------------------------------------------------------

    def _pids(self) -> dict[str, int]:
        path = self.state / "pids.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _record(self, name: str, pid: int) -> None:
        pids = self._pids()
        pids[name] = pid
        (self.state / "pids.json").write_text(json.dumps(pids, indent=1))

    def _write_info(self, info: dict[str, Any]) -> None:
        (self.state / "lab.json").write_text(json.dumps(info, indent=1))

    def info(self) -> dict[str, Any]:
        path = self.state / "lab.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # --- down ---------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything of this lab that exists; what was removed, one line each."""
        done: list[str] = []
        pids = set(self._pids().values()) | {p.pid for p in self.children.values()}
        # Whatever runs in the lab's namespaces was started for the lab (by it or a test).
        namespaces = topology.existing(self.prefix)
        for ns in namespaces:
            out = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            )
            pids |= {int(x) for x in out.stdout.split()}
        for c in self._containers_now():
            lab_image.podman("rm", "-f", "-t", "0", c)
            done.append(f"container {c}")
        done += [f"process {pid}" for pid in _stop(pids, self.children)]
        self.children.clear()
        for ns in topology.destroy(self.prefix):
            done.append(f"netns {ns}")
        if self.state.exists():
            shutil.rmtree(self.state)
            done.append(f"state {self.state}")
        return done

    def _containers_now(self) -> list[str]:
        if shutil.which("podman") is None:
            return []
        out = lab_image.podman(
            "ps", "-a", "--filter", f"label=appliance-lab={self.prefix}", "--format",
            "{{.Names}}", check=False,
        )  # fmt: skip
        return out.split()

    # --- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What exists, what runs, and (from the pages) who is master."""
        pids = self._pids()
        return {
            "prefix": self.prefix,
            "state": str(self.state),
            "namespaces": topology.existing(self.prefix),
            "containers": self._containers_now(),
            "processes": {name: (pid, _alive(pid)) for name, pid in sorted(pids.items())},
            **self.info(),
        }

    def run_in(
        self, host: str, *argv: str, timeout: float = 10
    ) -> subprocess.CompletedProcess[str]:
        """A command in a host's namespace (curl and dig from the client, say)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns(host), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def api_state(self, lb: str) -> dict[str, Any] | None:
        """An LB host's /api/v1/state, fetched from the client; None when it does not answer."""
        h = topology.host(lb)
        url = f"http://{h.ipv4}:{WEB_PORT}/api/v1/state"
        done = self.run_in("client", "curl", "-sf", "--max-time", "2", url, timeout=5)
        if done.returncode != 0:
            return None
        try:
            state: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            return None
        return state

    def master(self) -> str | None:
        """The LB host whose VRRP instance is master, asked of each page."""
        for h in topology.lbs():
            state = self.api_state(h.name)
            if state and any(i.get("state") == "master" for i in state.get("vrrp", [])):
                return h.name
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pids: set[int], children: dict[str, subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM, then SIGKILL after 3 s; reap our own children."""
    alive = [pid for pid in pids if _alive(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    mine = {p.pid: p for p in children.values()}
    for pid in alive:
        while _alive(pid) and time.monotonic() < deadline:
            if pid in mine and mine[pid].poll() is not None:
                break
            time.sleep(0.02)
        if _alive(pid) and (pid not in mine or mine[pid].poll() is None):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pid in mine:
            mine[pid].wait()
    return alive


def _wait_systemd(container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = lab_image.podman(
            "exec", container, "systemctl", "is-system-running", check=False
        ).strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"lab: systemd in {container} did not come up ({state or 'no answer'})")

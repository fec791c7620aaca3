"""`make demo`: the lab, Ansible onto its two LB hosts, and what a newcomer should see.

Steps: take down a lab of the same name, build the hosts' image and the wheels they
install, bring the lab up with systemd containers as LB hosts, run
`ansible-playbook -i inventories/lab playbooks/site.yml` (the real roles, the real unit),
then show each Service with its VIP, requests from the client through the VIPs, a DNS
answer, which host is master, and the way to a failover. The exit status is 0 only if a
request through a VIP was answered by a pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from appliance.address import host_port
from appliance.lab import image as lab_image
from appliance.lab import topology
from appliance.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "build" / "lab" / "wheels"
WEB_PORTS = (8080, 8081)


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n==> {text}")


def ansible_env(prefix: str) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        CONTAINERS_CONF=str(lab_image.containers_conf()),
        LAB_PREFIX=prefix,
        LAB_WHEELS=str(WHEELS),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return env


def provision(prefix: str) -> int:
    """ansible-playbook on the lab's inventory; its exit status (the output streams)."""
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(ROOT / "inventories" / "lab"),
        str(ROOT / "playbooks" / "site.yml"),
    ]
    say("$ ansible-playbook -i inventories/lab playbooks/site.yml")
    return subprocess.run(argv, cwd=ROOT, env=ansible_env(prefix), check=False).returncode


def wait_master(lab: Lab, timeout: float = 30) -> tuple[str | None, dict[str, Any] | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        master = lab.master()
        if master:
            state = lab.api_state(master)
            if state and state.get("ready"):
                return master, state
        time.sleep(0.5)
    return None, None


def show_services(state: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Print each Service with its VIP; the (service, vip, port) of the TCP ones."""
    tcp: list[tuple[str, str, int]] = []
    say(f"{'SERVICE':18} {'VIP':26} {'POLICY':8} REAL SERVERS (node:nodePort weight)")
    for s in state.get("services", []):
        vips = ", ".join(s["vips"]) or "-"
        seen = set()
        for p in s["ports"]:
            rs = " ".join(f"{r['node']}:{p['real_port']}/{r['weight']}" for r in p["real_servers"])
            vip = host_port(p["vip"], p["port"]) + "/" + p["protocol"]
            line = f"{s['key']:18} {vip:26} "
            say(line + f"{s['policy'] or '-':8} {rs or '-'}")
            seen.add(p["vip"])
            if p["protocol"] == "TCP" and ":" not in p["vip"]:
                tcp.append((s["key"], p["vip"], p["port"]))
        if not seen:
            say(f"{s['key']:18} {vips:26} (no ports served)")
    for r in state.get("refused", []):
        say(f"refused: {r}")
    return tcp


def requests(lab: Lab, vip: str, port: int, n: int) -> int:
    """n requests from the client through a VIP; how many a pod answered."""
    ok = 0
    for _ in range(n):
        done = lab.run_in(
            "client", "curl", "-s", "--max-time", "2", f"http://{vip}:{port}/", timeout=5
        )
        answer = done.stdout.strip() or f"(no answer: curl exit {done.returncode})"
        say(f"  client$ curl http://{vip}:{port}/  ->  {answer}")
        ok += done.returncode == 0 and bool(done.stdout.strip())
    return ok


def demo(prefix: str = topology.DEFAULT_PREFIX) -> int:
    lab = Lab(prefix)
    if topology.existing(prefix) or lab.state.exists():
        step(f"removing the lab left from an earlier run ({prefix})")
        lab.down()
    why = lab_image.why_not()
    if why:
        say(f"make demo: {why}")
        return 1
    step("the LB hosts' image: Debian 12 with systemd (debootstrap, first time ~3 min)")
    say(lab_image.image())
    step("the appliance wheel and its dependencies for the hosts (they reach no index)")
    lab_image.wheels(WHEELS)
    say(", ".join(sorted(p.name.split("-")[0] for p in WHEELS.glob("*.whl"))))
    step("the lab: client, lb1, lb2, node-1..3 on one bridge (198.18.0.0/24)")
    lab.up(lb="containers", web_ports=WEB_PORTS)
    for h in topology.HOSTS:
        say(f"  {h.name:7} {h.ipv4:13} netns {lab.netns(h.name)}")
    step("Ansible: LB hosts, cluster nodes, kernel modules")
    if provision(prefix) != 0:
        say("make demo: ansible-playbook failed (above); the lab stays up to look at")
        return 1
    step("VRRP: waiting for a master")
    master, state = wait_master(lab)
    if master is None or state is None:
        say("make demo: no LB host became master in 30 s (see `appliance lab status`)")
        return 1
    say(f"master: {master}  (lb1 has priority 100, lb2 90)")
    step("Services and their VIPs (from the master's /api/v1/state)")
    tcp = show_services(state)
    step("requests from the client through the VIPs (each answer: the pod, and its node)")
    answered = 0
    for key in ("shop/web-lb", "shop/echo"):
        for service, vip, port in tcp:
            if service == key and port == 80:
                say(
                    f"{service}: externalTrafficPolicy Cluster, any node forwards to any pod"
                    if key.endswith("web-lb")
                    else f"{service}: Local, only nodes with a pod; ClientIP affinity keeps "
                    "this client on one"
                )
                answered += requests(lab, vip, port, 6 if key.endswith("web-lb") else 4)
                break
    step("DNS from the client")
    for name in ("web-lb.shop.svc.cluster.local", "db.shop.svc.cluster.local"):
        h = topology.host(master)
        dig = lab.run_in("client", "dig", f"@{h.ipv4}", "+short", name, timeout=5)
        say(f"  client$ dig @{h.ipv4} +short {name}")
        for line in dig.stdout.split() or ["(no answer)"]:
            say(f"    {line}")
    step("try it")
    c = lab.container(master)
    say(f"  status pages:  http://127.0.0.1:{WEB_PORTS[0]}/ (lb1)  "
        f"http://127.0.0.1:{WEB_PORTS[1]}/ (lb2)")  # fmt: skip
    say(f"  a client:      ip netns exec {lab.netns('client')} curl http://<VIP>/")
    lab_cmd = f"{Path(sys.executable).parent / 'appliance'} lab"
    say(f"  host loss:     {lab_cmd} fail {master}   (its cable pulled and its processes "
        "killed; the other takes the VIPs within a second)")  # fmt: skip
    say(f"                 {lab_cmd} heal {master}   (it comes back, and takes the VIPs back "
        "after its first sync)")  # fmt: skip
    say(f"  daemon crash:  podman exec {c} systemctl kill -s KILL appliance   (systemd removes "
        "its VIPs, restarts it)")  # fmt: skip
    say(f"  handover:      podman exec {c} /opt/appliance/bin/appliance ha resign --config "
        "/etc/appliance/appliance.yaml --for 10m   (the peer takes over; `ha resume` undoes "
        "it)")  # fmt: skip
    say(f"  who is master: {Path(sys.executable).parent / 'appliance'} lab status")
    say(f"  tear down:     {Path(sys.executable).parent / 'appliance'} lab down")
    if answered == 0:
        say("\nmake demo: FAILED: no request through a VIP was answered")
        return 1
    say(f"\nmake demo: OK ({answered} requests answered through VIPs)")
    return 0

"""The daemon's VRRP process (appliance.ha.child), seen from outside: two `appliance run`
daemons on a LAN (lb1 priority 150, lb2 100, 100 ms adverts), the VIP's holder read with
`ip addr` in each namespace, the processes with `ps`.

- SIGKILL of the daemon alone: its VRRP process resigns (as keepalived's children do when
  their parent dies), so lb1 holds nothing at once and lb2 takes over without waiting out
  Master_Down_Interval.
- SIGKILL of the VRRP process: the daemon removes the VIPs it held, starts it again, and
  lb1 (which has a plan) takes the VIP back at its priority; the page counts the restart.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ha_lan import NET4, PYTHON, Child, Host, Lan, in_ns, lan

POOL_FIRST = f"{NET4}200"
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, uid: 00000000-0000-0000-0000-00000000a001}
spec:
  type: LoadBalancer
  ports: [{name: http, port: 80, nodePort: 30080, protocol: TCP}]
  selector: {app: web}
"""


def config(
    workdir: Path, name: str, priority: int, peer: str, track: str = "", vmac: bool = False
) -> Path:
    (workdir / "manifests").mkdir(exist_ok=True)
    (workdir / "manifests" / "web.yaml").write_text(SERVICE)
    (workdir / name).mkdir(exist_ok=True)
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"""\
state_dir: {workdir / name}
cluster:
  manifests: {workdir / "manifests"}
pools:
  - name: lan
    addresses: ['{POOL_FIRST}-{NET4}209']
dataplane:
  backend: nftables
ha:
  interface: eth0
  garp_count: 2
{track}  instances:
    - name: vi-1
      vrid: 61
      priority: {priority}
      advert_interval: 100ms
      peers: ['{peer}']
      use_vmac: {"true" if vmac else "false"}
dns:
  enabled: false
health:
  enabled: false  # no real nodes on this LAN
web:
  listen: "127.0.0.1:18081"
"""
    )
    return path


class Daemon:
    def __init__(self, host: Host, path: Path, workdir: Path, name: str) -> None:
        self.host, self.name = host, name
        self.child = Child(
            host.ns,
            [PYTHON, "-m", "appliance.daemon", "run", "--config", str(path)],
            workdir / f"{name}.log",
        )

    def state(self) -> dict[str, object] | None:
        got = self.host.run("curl", "-sf", "http://127.0.0.1:18081/api/v1/state", check=False)
        return json.loads(got.stdout) if got.returncode == 0 else None

    def vrrp_pids(self) -> list[int]:
        """The daemon's children running appliance.ha.child (`ps`, not the daemon's word)."""
        out = self.host.run(
            "ps", "-o", "pid=,args=", "--ppid", str(self.child.pid), check=False
        ).stdout
        return [int(line.split()[0]) for line in out.splitlines() if "appliance.ha.child" in line]

    def holds(self) -> bool:
        """The VIP on any interface of the host (eth0, or the virtual MAC's macvlan)."""
        out = self.host.run("ip", "-4", "-o", "addr", "show").stdout
        return f" {POOL_FIRST}/" in out


def wait(what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> float:
    """Seconds until `check` held; fails with the daemons' logs."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s\n{logs()}")


# lb1 tracks an uplink of its own (a veth pair here): down costs it 100 priority.
TRACK = """\
  track:
    interfaces: [{name: up0, weight: -100}]
"""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    with lan("px") as net:
        yield from _pair(net, tmp_path)


@pytest.fixture
def vmac_pair(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, Host, Lan]]:
    with lan("pv") as net:
        client = net.add_host("cl", 13)
        for lb1, lb2 in _pair(net, tmp_path, vmac=True):
            yield lb1, lb2, client, net


def _pair(net: Lan, workdir: Path, vmac: bool = False) -> Iterator[tuple[Daemon, Daemon]]:
    h1, h2 = net.add_host("lb1", 11), net.add_host("lb2", 12)
    h1.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
    for ifname in ("up0", "up0p"):
        h1.run("ip", "link", "set", ifname, "up")
    daemons: list[Daemon] = []
    try:
        for host, name, prio, peer, track in (
            (h1, "lb1", 150, h2, TRACK),
            (h2, "lb2", 100, h1, ""),
        ):
            host.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
            path = config(workdir, name, prio, peer.address4, track, vmac)
            daemons.append(Daemon(host, path, workdir, name))
        yield daemons[0], daemons[1]
    finally:
        for d in daemons:
            d.child.stop()


def _logs(*daemons: Daemon) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {d.name}\n{d.child.output()[-3000:]}" for d in daemons)


def _settled(lb1: Daemon, lb2: Daemon) -> None:
    logs = _logs(lb1, lb2)
    wait("lb1 holds the VIP", lambda: lb1.holds() and not lb2.holds(), 20, logs)
    wait("lb2 is backup", lambda: _states(lb2) == ["backup"], 10, logs)


def _alive(host: Host, pid: int) -> bool:
    return bool(host.run("ps", "-o", "pid=", "-p", str(pid), check=False).stdout.strip())


def _states(d: Daemon) -> list[object]:
    s = d.state()
    return [i["state"] for i in s.get("vrrp", [])] if s else []  # type: ignore[attr-defined]


def test_a_killed_daemon_leaves_no_master_behind(pair: tuple[Daemon, Daemon]) -> None:
    lb1, lb2 = pair
    _settled(lb1, lb2)
    # Each daemon walled VRRP off to its peer (the kernel's view, `nft list`).
    table = lb1.host.run("nft", "list", "table", "inet", "appliance_vrrp").stdout
    assert f"vrrp ip saddr != {lb2.host.address4} counter" in table and "drop" in table, table
    speakers = lb1.vrrp_pids()
    assert len(speakers) == 1, speakers
    # The wire, from lb2's side: lb1's adverts and the priority they carry.
    dump = subprocess.Popen(
        ["ip", "netns", "exec", lb2.host.ns, "tcpdump", "-l", "-nn", "-i", "eth0",
         "ip proto 112 and src " + lb1.host.address4],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        lb1.child.send(signal.SIGKILL)
        lb1.child.proc.wait()
        logs = _logs(lb1, lb2)
        wait("lb1 let go of the VIP", lambda: not lb1.holds(), 2, logs)
        wait("lb2 holds the VIP", lb2.holds, 2, logs)
        wait("lb1's VRRP process exited", lambda: not _alive(lb1.host, speakers[0]), 2, logs)
        time.sleep(0.3)
    finally:
        dump.terminate()
        out, _ = dump.communicate(timeout=5)
    adverts = [line for line in out.splitlines() if "vrid 61" in line]
    assert adverts and all("prio 150" in a for a in adverts[:-1]), out
    # Its VRRP process resigned (priority 0: lb2 need not wait out Master_Down_Interval)
    # and fell silent; lb1 answers ARP for nothing (the VIP is off its interface).
    assert "prio 0," in adverts[-1], out


def test_a_killed_vrrp_process_is_started_again(pair: tuple[Daemon, Daemon]) -> None:
    lb1, lb2 = pair
    _settled(lb1, lb2)
    logs = _logs(lb1, lb2)
    (first,) = lb1.vrrp_pids()
    lb1.host.run("kill", "-KILL", str(first))
    wait("lb2 takes over", lambda: lb2.holds() and not lb1.holds(), 3, logs)
    wait("a new VRRP process", lambda: len(lb1.vrrp_pids()) == 1 and lb1.vrrp_pids() != [first],
         5, logs)  # fmt: skip
    wait("lb1 holds the VIP again", lambda: lb1.holds() and not lb2.holds(), 5, logs)
    s = lb1.state()
    assert s is not None
    (inst,) = s["vrrp"]  # type: ignore[misc]
    assert (inst["state"], inst["priority"], inst["restarts"]) == ("master", 150, 1), inst
    assert "the VRRP process exited (-9)" in lb1.child.output()


def test_a_tracked_uplink_down_hands_the_vip_to_the_peer(pair: tuple[Daemon, Daemon]) -> None:
    """keepalived's track_interface with a weight: 150 - 100 < 100, lb2 preempts; back up,
    lb1 preempts again. Seen in `ip addr` of both hosts; the cause on lb1's page."""
    lb1, lb2 = pair
    _settled(lb1, lb2)
    logs = _logs(lb1, lb2)
    lb1.host.run("ip", "link", "set", "up0", "down")
    wait("lb2 holds the VIP", lambda: lb2.holds() and not lb1.holds(), 5, logs)
    s = lb1.state()
    assert s is not None
    (inst,) = s["vrrp"]  # type: ignore[misc]
    assert (inst["state"], inst["priority"], inst["configured_priority"]) == ("backup", 50, 150)
    tracking = {t["cause"]: t for t in s["tracking"]}  # type: ignore[attr-defined]
    assert tracking["interface up0"]["failing"] and tracking["interface up0"]["reason"] == "down"
    assert not tracking["dataplane"]["failing"] and not tracking["source"]["failing"]
    metrics = lb1.host.run("curl", "-sf", "http://127.0.0.1:18081/metrics").stdout
    assert 'appliance_vrrp_track_failing{cause="interface up0"} 1.0' in metrics, metrics
    assert 'appliance_vrrp_priority{instance="vi-1"} 50.0' in metrics, metrics
    lb1.host.run("ip", "link", "set", "up0", "up")
    wait("lb1 holds the VIP again", lambda: lb1.holds() and not lb2.holds(), 5, logs)
    s = lb1.state()
    assert s is not None and s["vrrp"][0]["priority"] == 150  # type: ignore[index]


def test_a_planned_handover_holds_through_a_restart(
    pair: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    """`appliance ha resign`: lb1 hands the VIP to lb2 and stays out, even across a
    restart of its daemon (an upgrade), until `appliance ha resume`."""
    lb1, lb2 = pair
    _settled(lb1, lb2)
    logs = _logs(lb1, lb2)
    cli = [str(Path(PYTHON).parent / "appliance"), "ha"]
    conf = str(tmp_path / "lb1.yaml")
    out = lb1.host.run(*cli, "resign", "--config", conf).stdout
    assert "vi-1: resigned by the operator" in out, out
    wait("lb2 holds the VIP", lambda: lb2.holds() and not lb1.holds(), 3, logs)
    s = lb1.state()
    assert s is not None and s["vrrp"][0]["state"] == "fault", s  # type: ignore[index]
    # A restart of lb1's daemon (its allocations and resignation are in state_dir).
    lb1.child.stop()
    lb1.child = Daemon(lb1.host, Path(conf), tmp_path, "lb1-again").child
    wait("lb1's daemon is back", lambda: _states(lb1) == ["fault"], 20, logs)
    for _ in range(50):  # 1 s: more than two Master_Down_Intervals
        assert lb2.holds() and not lb1.holds(), logs()
        time.sleep(0.02)
    out = lb1.host.run(*cli, "resume", "--config", conf).stdout
    assert "vi-1: resumed" in out, out
    wait("lb1 holds the VIP again", lambda: lb1.holds() and not lb2.holds(), 5, logs)
    bad = lb1.host.run(*cli, "resign", "--config", conf, "--instance", "vi-9", check=False)
    assert bad.returncode == 1 and "no VRRP instance 'vi-9'" in bad.stderr, bad


VMAC = "00:00:5e:00:01:3d"  # RFC 5798 7.3 for VRID 61

# The client's own view, without ping: an ARP query for the VIP (scapy: every MAC that
# answers within 300 ms), and a TCP connect to a closed port (refused = reachable).
PROBE = f"""
import socket, sys
from scapy.all import ARP, Ether, srp
answered, _ = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="{POOL_FIRST}"), iface="eth0",
                  timeout=0.3, multi=True, verbose=False)
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("{POOL_FIRST}", 9))
    reach = "open"
except ConnectionRefusedError:
    reach = "refused"
except OSError as e:
    reach = type(e).__name__
print(" ".join(sorted({{r.hwsrc for _, r in answered}})), reach, sep="|")
"""


def _probe(client: Host) -> tuple[set[str], str]:
    out = client.run(PYTHON, "-c", PROBE).stdout.strip().splitlines()[-1]
    macs, reach = out.split("|")
    return set(macs.split()), reach


def _fdb_port(net: Lan, mac: str) -> str | None:
    """The switch port (veth in the bridge's namespace) that has learnt `mac`."""
    out = in_ns(net.bridge_ns, "bridge", "fdb", "show", "br", "br0").stdout
    return next((line.split()[2] for line in out.splitlines() if line.startswith(mac)), None)


def test_a_virtual_mac_keeps_the_clients_arp_entry_through_a_takeover(
    vmac_pair: tuple[Daemon, Daemon, Host, Lan], tmp_path: Path
) -> None:
    """use_vmac: only the virtual MAC answers for the VIP (never a host's own MAC), the
    client reaches the VIP through it, and after a takeover the client's neighbour entry
    is the same MAC while the switch has learnt it on the new master's port."""
    lb1, lb2, client, net = vmac_pair
    _settled(lb1, lb2)
    logs = _logs(lb1, lb2)
    link = lb1.host.run("ip", "-o", "link", "show", "vrrp.61").stdout
    assert VMAC in link and "state UP" in link, link
    assert "vrrp.61" not in lb2.host.run("ip", "-o", "-4", "addr", "show").stdout
    macs, reach = _probe(client)
    assert (macs, reach) == ({VMAC}, "refused"), (macs, reach, logs())
    first_port = _fdb_port(net, VMAC)
    assert first_port is not None and first_port.endswith("lb1"), first_port
    neigh = client.neighbour_mac(POOL_FIRST)
    assert neigh == VMAC, neigh
    cli = [str(Path(PYTHON).parent / "appliance"), "ha"]
    lb1.host.run(*cli, "resign", "--config", str(tmp_path / "lb1.yaml"))
    wait("lb2 holds the VIP", lambda: lb2.holds() and not lb1.holds(), 3, logs)
    wait("the switch learnt the VMAC on lb2's port",
         lambda: (_fdb_port(net, VMAC) or "").endswith("lb2"), 3, logs)  # fmt: skip
    assert client.neighbour_mac(POOL_FIRST) == VMAC  # the client never had to learn anew
    macs, reach = _probe(client)
    assert (macs, reach) == ({VMAC}, "refused"), (macs, reach, logs())
    link = lb1.host.run("ip", "-o", "link", "show", "vrrp.61").stdout
    assert "state DOWN" in link or "UP" not in link.split("<")[1].split(">")[0], link


def test_a_late_vrrp_loop_is_logged(pair: tuple[Daemon, Daemon]) -> None:
    """The VRRP process stopped (SIGSTOP) for 0.6 s: when it runs again it says how late
    its loop was; a loop on time says nothing. It runs at nice -10, the daemon at 0 (as
    keepalived's vrrp_priority), every thread of it (`ps -L`)."""
    lb1, lb2 = pair
    _settled(lb1, lb2)
    assert "its loop ran" not in lb1.child.output()
    (speaker,) = lb1.vrrp_pids()
    nice = {
        pid: {int(n) for n in lb1.host.run("ps", "-L", "-o", "ni=", "-p", str(pid)).stdout.split()}
        for pid in (speaker, lb1.child.pid)
    }
    assert nice == {speaker: {-10}, lb1.child.pid: {0}}, nice
    lb1.host.run("kill", "-STOP", str(speaker))
    time.sleep(0.6)
    lb1.host.run("kill", "-CONT", str(speaker))
    logs = _logs(lb1, lb2)
    wait("the late loop logged", lambda: f"VRRP process {speaker}: its loop ran" in
         lb1.child.output(), 3, logs)  # fmt: skip
    line = next(x for x in lb1.child.output().splitlines() if "its loop ran" in x)
    late_ms = int(line.split("its loop ran ")[1].split(" ms")[0])
    assert 400 <= late_ms <= 2000, line

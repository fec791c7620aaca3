"""VRRP under the daemon's own load: thousands of Services, a manifest edited every 2 s.

The issue: "The daemon's own work starves VRRP: split brain at a few thousand Services. A
files source of N LoadBalancer Services, one manifest edited every 2 s for 60 s, the VIP's
holder sampled from outside: N=1,000: 0% both holding; 3,000: 42%; 10,000: 60%, both
hosts flapping master/backup. Master_Down_Interval at 100 ms adverts is ~0.36 s."

Two real daemons (`python -m appliance.daemon run`) on a LAN, lb1 priority 150 and lb2
100, one IPv4 VRRP instance, the nftables dataplane, DNS on; N Services from a folder of
manifests (100 per file), all in one pool of 198.19.0.0/16. Once both have synced all N,
the test waits (bounded) for lb1 to hold every VIP and lb2 none; a pair that never gets
there fails for it, but is measured all the same. An observer in the client namespace
(tests/support/holders.py,
stdlib only, nothing from `appliance`) sends an ARP who-has every 20 ms for five VIPs
spread over the pool (the first and the last among them) and captures every VRRP advert,
while the test rewrites one manifest every 2 s for 60 s (the port and a label of its 100
Services: a change that reaches the plan, nftables and the DNS zone). Then:

- zero changes of the advertising source (lb1 was elected before the observer started);
- no sample in which no host, or both hosts, answered for a VIP. A sample is the
  client's view: 0 means nobody answered its ARP within 20 ms, whether nobody held the VIP
  or the answer was lost behind a flood of gratuitous ARPs (`backlog_drops_while_watched`
  in the figures tells those apart; either way the client's traffic stalls).

Variants: 10,000 Services at 100 ms adverts, 10,000 at 20 ms, 50,000 at 100 ms. Each one is
bounded: readiness has a deadline that grows with N, the observer runs 61 s, every wait
and every process stop has a timeout. On a 2-CPU machine they take ~1.5, ~1.5 and 4-5
minutes; a failure says in its first line what went wrong and when, then prints the
figures as JSON (also printed with `-s` on a pass).

The hosts do not take a neighbour entry from a gratuitous ARP (arp_accept 0): the
kernel's neighbour table is shared by all namespaces (gc_thresh3 1024), and N GARPs learnt
by three hosts filled it, after which the kernel refused VRRP's multicast sends for
seconds at a time on both hosts at once: the split brain first seen here was that.

`test_the_observer_sees_two_holders_and_none` is the observer's own check on a real LAN:
both hosts holding a VIP gives samples with two MACs, neither holding gives samples with
none; so a pass of the load test is not the observer being blind.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from ha_lan import PYTHON, REPO, Child, Host, Lan, lan, wait_for

OBSERVER = REPO / "tests" / "support" / "holders.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the observer runs without the project's venv
POOL = "198.19.0.0/16"
PER_FILE = 100
VRID = 77
NODES = ("198.18.20.21", "198.18.20.22", "198.18.20.23")  # no host behind them
EDIT_EVERY = 2.0
EDITS = 30  # one every 2 s for 60 s
OBSERVE = EDIT_EVERY * EDITS + 1.0  # the last edit gets 3 s of watching
SAMPLE = 0.02
WATCHED = 5
FOLD = re.compile(r"198\.19\.\d+\.\d+|process \d+")  # VIPs and PIDs, in log digests


# --- manifests, written as text (50,000 Services through a YAML library is far too slow) --


def service_yaml(i: int, edit: int) -> str:
    name = f"svc-{i:05d}"
    return (
        "---\n"
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: load-{i // 1000:02d}\n"
        f"  uid: 00000000-0000-0000-0000-{i:012d}\n"
        f'  labels: {{app: {name}, edit: "{edit}"}}\n'
        "spec:\n"
        "  type: LoadBalancer\n"
        f"  selector: {{app: {name}}}\n"
        f"  ports: [{{name: http, port: {80 + edit}, targetPort: 8080, "
        f"nodePort: {30000 + i % 2700}, protocol: TCP}}]\n"
    )


def services_file(index: int, edit: int) -> str:
    first = index * PER_FILE
    return "".join(service_yaml(i, edit) for i in range(first, first + PER_FILE))


def nodes_yaml() -> str:
    docs = []
    for n, address in enumerate(NODES, 1):
        docs.append(
            "---\n"
            "apiVersion: v1\n"
            "kind: Node\n"
            f"metadata: {{name: node-{n}, uid: 6a0f5d7e-0000-0000-0000-00000000000{n}}}\n"
            "status:\n"
            f"  addresses: [{{type: InternalIP, address: {address}}}]\n"
            "  conditions: [{type: Ready, status: 'True'}]\n"
        )
    return "".join(docs)


def write_atomically(path: Path, text: str) -> None:
    """As a ConfigMap mount or `kubectl`-driven sync would: never a half-written file.
    The temporary name is hidden, so the files source skips it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifests(folder: Path, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    (folder / "nodes.yaml").write_text(nodes_yaml())
    files = []
    for index in range((n + PER_FILE - 1) // PER_FILE):
        path = folder / f"svc-{index:03d}.yaml"
        path.write_text(services_file(index, 0))
        files.append(path)
    return files


def config_yaml(workdir: Path, name: str, priority: int, peer: str, advert: float) -> Path:
    state = workdir / name
    state.mkdir(exist_ok=True)
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"""\
state_dir: {state}
cluster:
  manifests: {workdir / "manifests"}
pools:
  - name: load
    addresses: ['{POOL}']
dataplane:
  backend: nftables
ha:
  interface: eth0
  instances:
    - name: vi-1
      vrid: {VRID}
      priority: {priority}
      advert_interval: {round(advert * 1000)}ms
      family: IPv4
      peers: ['{peer}']
dns:
  enabled: true
  listen: ["127.0.0.1:5353"]
health:
  # The nodes are addresses with no host behind them (there is no cluster here): every
  # check would fail and drain them. Off, every node counts as up.
  enabled: false
web:
  listen: "127.0.0.1:18090"
"""
    )
    return path


# --- the daemons, read through their JSON log lines ---------------------------------------


@dataclass
class Daemon:
    host: Host
    name: str
    config: Path
    child: Child
    started: float  # time.time() when it was started
    _offset: int = 0
    _parsed: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far, read on from where the last call stopped (a flapping
        daemon writes 100,000s of them; re-parsing all of them every second is load)."""
        with self.child.log.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    self._parsed.append(obj)
        return self._parsed

    def synced(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            line for line in self.lines() if line.get("event") == "synced" and _when(line) >= since
        ]

    def vrrp(self, since: float = 0.0) -> list[str]:
        return [
            f"{line.get('state')} ({line.get('reason')})"
            for line in self.lines()
            if line.get("event") == "vrrp" and _when(line) >= since
        ]

    def late_loops(self, since: float = 0.0) -> list[str]:
        """The VRRP process's own word that its loop ran late (appliance.ha.child)."""
        return [
            f"{line.get('timestamp', '')} {line.get('event')}"
            for line in self.lines()
            if "loop ran" in str(line.get("event", "")) and _when(line) >= since
        ]

    def full_sync(self, n: int) -> dict[str, Any] | None:
        """Its first sync with all N Services planned."""
        wanted = f"{n} VIPs, {n} services,"
        return next((s for s in self.synced() if s.get("summary", "").startswith(wanted)), None)

    def has_all(self, n: int) -> bool:
        return self.full_sync(n) is not None

    def held(self) -> int:
        """VIPs on its interface. `ip` refuses a dump the kernel's changes interrupted
        (exit 255, "Dump was interrupted"), as it may be while 50,000 go on: again."""
        for _ in range(20):
            done = self.host.run("ip", "-4", "-o", "addr", "show", "dev", "eth0", check=False)
            if done.returncode == 0:
                return done.stdout.count(" inet 198.19.")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: ip addr show: {done.stderr.strip()}")

    def allocations(self) -> dict[str, list[str]]:
        data = json.loads((self.config.parent / self.name / "allocations.json").read_text())
        return {key: a["addresses"] for key, a in data["allocations"].items()}

    def children(self) -> list[int]:
        out = self.host.run("ps", "-o", "pid=", "--ppid", str(self.child.pid), check=False)
        return [int(p) for p in out.stdout.split()]

    def errors(self) -> list[str]:
        return [
            json.dumps(line)[:300]
            for line in self.lines()
            if line.get("level") in ("error", "critical")
        ]

    def stop(self) -> None:
        """SIGTERM (the daemon stops its VRRP process), then SIGKILL by PID whatever of
        ours is still there: nothing may outlive the namespaces."""
        children = self.children()
        self.child.stop(signal.SIGTERM, timeout=10)
        deadline = time.monotonic() + 5
        for pid in children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def _when(line: dict[str, Any]) -> float:
    stamp = line.get("timestamp")
    if not isinstance(stamp, str):
        return 0.0
    with contextlib.suppress(ValueError):
        return datetime.datetime.fromisoformat(stamp).timestamp()
    return 0.0


def start_daemon(host: Host, name: str, config: Path, workdir: Path) -> Daemon:
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=1")  # the nftables dataplane checks it
    checked = host.run(str(REPO / ".venv" / "bin" / "appliance"), "check-config", str(config),
                       check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    started = time.time()
    child = Child(
        host.ns,
        [PYTHON, "-m", "appliance.daemon", "run", "--config", str(config)],
        workdir / f"{name}.log",
    )
    return Daemon(host, name, config, child, started)


def digests(daemons: tuple[Daemon, ...]) -> str:
    return "\n".join(digest(d) for d in daemons)


def digest(d: Daemon) -> str:
    """A daemon's log in brief: its commonest messages (VIPs and PIDs folded, so 10,000
    "VIP x added back" are one line) and its last few distinct lines."""
    counts: Counter[str] = Counter()
    last: list[str] = []
    for line in d.lines():
        text = FOLD.sub(lambda m: "process <pid>" if m[0][0] == "p" else "<vip>",
                        str(line.get("event", "")))  # fmt: skip
        if line.get("event") == "vrrp":
            text = f"vrrp -> {line.get('state')} ({line.get('reason')})"
        counts[text] += 1
        if counts[text] == 1:
            last.append(f"{line.get('timestamp', '')} {text}")
    common = "\n".join(f"  {k:6d} x {text[:150]}" for text, k in counts.most_common(12))
    tail = "\n".join(f"  {t[:170]}" for t in last[-15:])
    return f"--- {d.name}: commonest log lines\n{common}\n--- {d.name}: last new lines\n{tail}"


def wait(what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> float:
    took = wait_until(check, timeout)
    if took is None:
        raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs()}")
    return took


def wait_until(check: Callable[[], bool], timeout: float, every: float = 1.0) -> float | None:
    """Seconds until `check` held, or None. Once a second: `ip addr` of 50,000 addresses is
    itself work on the machine under test."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    return None


def backlog_drops() -> int:
    """Frames the kernel dropped because a CPU's input backlog was full, machine-wide
    (/proc/net/softnet_stat, column 2). A veth hands every frame to its peer's backlog
    (net.core.netdev_max_backlog, 1,000 by default): a burst of 50,000 gratuitous ARPs
    overflows it, and the ARP replies queued behind them are lost with it."""
    lines = Path("/proc/net/softnet_stat").read_text().splitlines()
    return sum(int(line.split()[1], 16) for line in lines)


def spread(addresses: list[str], k: int = WATCHED) -> list[str]:
    """k addresses evenly over the sorted pool use, the first and the last among them."""
    ordered = sorted(addresses, key=lambda a: int(ipaddress.ip_address(a)))
    picks = {ordered[round(j * (len(ordered) - 1) / (k - 1))] for j in range(k)}
    return sorted(picks, key=lambda a: int(ipaddress.ip_address(a)))


# --- the test ------------------------------------------------------------------------------


@contextlib.contextmanager
def pair(tag: str, workdir: Path, n: int, advert: float) -> Iterator[tuple[Daemon, Daemon, Host]]:
    with lan(tag) as net:
        yield from _pair(net, workdir, n, advert)


def _pair(net: Lan, workdir: Path, n: int, advert: float) -> Iterator[tuple[Daemon, Daemon, Host]]:
    # No arp_accept: N gratuitous ARPs would otherwise fill the neighbour table that all
    # namespaces share (see add_host). A host of its own does not share it with its peer.
    h1, h2, client = (
        net.add_host(name, index, arp_accept=False)
        for name, index in (("lb1", 11), ("lb2", 12), ("cl", 9))
    )
    daemons: list[Daemon] = []
    try:
        for host, name, priority, peer in ((h1, "lb1", 150, h2), (h2, "lb2", 100, h1)):
            path = config_yaml(workdir, name, priority, peer.address4, advert)
            daemons.append(start_daemon(host, name, path, workdir))
        yield daemons[0], daemons[1], client
    finally:
        for d in daemons:
            d.stop()


# 50,000 last: what the kernel does with its addresses and ruleset around it (and while
# its namespaces go) is the heaviest of the three, and 20 ms adverts leave no room for it.
VARIANTS = [
    pytest.param(10_000, 0.1, "ld1", id="10000-services-100ms"),
    pytest.param(10_000, 0.02, "ld3", id="10000-services-20ms"),
    pytest.param(50_000, 0.1, "ld2", id="50000-services-100ms"),
]


@pytest.mark.parametrize(("n", "advert", "tag"), VARIANTS)
def test_vrrp_holds_under_load(n: int, advert: float, tag: str, tmp_path: Path) -> None:
    t_begin = time.monotonic()
    files = write_manifests(tmp_path / "manifests", n)
    t_written = time.monotonic() - t_begin
    with pair(tag, tmp_path, n, advert) as (lb1, lb2, client):
        both = (lb1, lb2)
        logs = partial(digests, both)
        # Both must plan all N Services, or there is nothing to measure.
        for d in both:
            wait(f"{d.name} synced {n} Services", partial(d.has_all, n), 120 + n / 200, logs)
        # Then lb1 should be master with every VIP and lb2 hold none. If that never
        # happens (the bug this test reproduces can keep the pair flapping from the start),
        # the watch below still runs: its figures say how bad it is. The bound is the
        # kernel's: it adds an interface address in time linear in those already there
        # (10,000 in 2.6 s, 50,000 in 2.5-4.5 min), so lb1's first takeover of 50,000 VIPs
        # alone takes minutes.
        t_hold = wait_until(lambda: lb1.held() == n and lb2.held() == 0, 60 + n / 200)
        held_before = {d.name: d.held() for d in both}
        ready_s = time.monotonic() - t_begin
        alloc1, alloc2 = lb1.allocations(), lb2.allocations()
        assert alloc1 == alloc2, "the two daemons planned different VIPs"
        vips = spread([a for addresses in alloc1.values() for a in addresses])

        out = tmp_path / "holders.json"
        observer = Child(
            client.ns,
            [SYSTEM_PYTHON, str(OBSERVER), "--interface", "eth0", "--source",
             client.address4, "--vips", ",".join(vips), "--interval", str(SAMPLE),
             "--duration", str(OBSERVE), "--out", str(out)],
            tmp_path / "holders.log",
        )  # fmt: skip
        try:
            wait_for("the observer listening", lambda: "listening" in observer.output(), 10)
            watch_from = time.time()
            drops_before = backlog_drops()
            t0 = time.monotonic()
            for k in range(1, EDITS + 1):
                time.sleep(max(0.0, t0 + (k - 1) * EDIT_EVERY - time.monotonic()))
                index = (k - 1) * 7 % len(files)
                write_atomically(files[index], services_file(index, k))
            last_edit = time.time()
            rc = observer.proc.wait(timeout=OBSERVE + 30)
            dropped = backlog_drops() - drops_before
        finally:
            observer.stop(signal.SIGTERM)
        assert rc == 0 and out.exists(), f"the observer failed\n{observer.output()}"
        result = json.loads(out.read_text())
        # The last edit reached both daemons: the load really was there.
        edits_synced = wait_until(lambda: all(d.synced(last_edit) for d in both), 60)
        alive = {d.name: d.child.proc.poll() is None for d in both}
        daemons = {d.name: figures_of(d, watch_from, n) for d in both}
        daemon_logs = logs()

    vrrp = result["adverts"]["by_vrid"].get(str(VRID), {})
    totals = result["totals"]
    samples = sum(totals.values()) or 1
    figures = {
        "services": n,
        "advert_interval_s": advert,
        "manifests_written_s": round(t_written, 2),
        "ready_s": round(ready_s, 1),
        "settled_s": None if t_hold is None else round(t_hold, 1),
        "vips_held_before_watch": held_before,
        "total_s": round(time.monotonic() - t_begin, 1),
        "vips_watched": vips,
        "samples_per_vip": result["sends"],
        "observer_max_send_gap_s": result["max_send_gap"],
        "observer_drops": result["drops"],
        "backlog_drops_while_watched": dropped,
        "samples_0_1_2plus": totals,
        "both_holding_pct": round(100 * totals["2+"] / samples, 1),
        "nobody_holding_pct": round(100 * totals["0"] / samples, 1),
        "per_vip": {v: r["counts"] for v, r in result["vips"].items()},
        "bad_samples_first": {v: r["bad"][:5] for v, r in result["vips"].items() if r["bad"]},
        "adverts": result["adverts"]["raw"],
        "transitions": result["adverts"]["transitions"],
        "transition_times_first": vrrp.get("transition_times", [])[:10],
        "advert_sources": {
            s: {k: v[k] for k in ("adverts", "priorities", "max_gap")}
            for s, v in vrrp.get("sources", {}).items()
        },
        "first_source": vrrp.get("first_source"),
        "daemons": daemons,
        "last_edit_synced": edits_synced is not None,
        "alive": alive,
    }
    report = json.dumps(figures, indent=1)
    print(report)
    problems = []
    if any(result["drops"].values()):
        problems.append(f"the observer's sockets dropped frames {result['drops']}: not trustworthy")
    if not all(alive.values()):
        problems.append("a daemon died")
    if t_hold is None:
        problems.append(f"never settled (lb1 master with all {n} VIPs, lb2 none): {held_before}")
    if result["adverts"]["raw"] < OBSERVE / advert / 2:
        problems.append("too few adverts on the wire")
    if vrrp.get("first_source") != lb1.host.address4:
        problems.append("lb1 was not the master when the watch began")
    if result["adverts"]["transitions"]:
        problems.append(f"{result['adverts']['transitions']} VRRP transitions under load")
    if totals["2+"]:
        problems.append(f"{totals['2+']} samples with both hosts holding a VIP")
    if totals["0"]:
        problems.append(f"{totals['0']} samples with no host holding a VIP")
    assert not problems, (
        "; ".join(problems) + "\n" + brief(figures) + "\n" + report + "\n" + daemon_logs
    )


def brief(figures: dict[str, Any]) -> str:
    """What a failure's reader needs first (CI shows only part of a long message): when
    the source changed, how long each one was silent, and whether the machine itself
    stalled (the observer's own sends) or a VRRP loop said it ran late."""
    gaps = {s: v["max_gap"] for s, v in figures["advert_sources"].items()}
    late = {name: d["late_loops_while_watched"] for name, d in figures["daemons"].items()}
    return (
        f"transitions at {figures['transition_times_first']}; longest silence per source"
        f" {gaps} s; the observer's sends at most {figures['observer_max_send_gap_s']} s"
        f" apart; VRRP loops late: {late}"
    )


def figures_of(d: Daemon, since: float, n: int) -> dict[str, Any]:
    """A daemon's side of the story, from its log: its syncs and VRRP states."""
    syncs = d.synced()
    full = d.full_sync(n)
    during = [float(s.get("seconds", 0.0)) for s in d.synced(since)]
    return {
        "start_to_full_sync_s": round(_when(full) - d.started, 1) if full else None,
        "first_sync_s": syncs[0].get("seconds") if syncs else None,
        "syncs_while_watched": len(during),
        "sync_max_s": round(max(during), 3) if during else None,
        "sync_mean_s": round(sum(during) / len(during), 3) if during else None,
        "vrrp_states_logged_before_watch": len(d.vrrp()) - len(d.vrrp(since)),
        "vrrp_states_logged_while_watched": d.vrrp(since)[:10],
        "late_loops_while_watched": d.late_loops(since)[:5],
        "errors": d.errors()[:5],
    }


def test_the_observer_sees_two_holders_and_none(tmp_path: Path) -> None:
    """Both hosts hold the VIP for a second, then lb1 alone, then nobody: the observer
    must count 2+, 1 and 0 holders in those seconds, with the hosts' own MACs."""
    vip = "198.19.0.1"
    with lan("ld0") as net:
        h1, h2, client = net.add_host("lb1", 11), net.add_host("lb2", 12), net.add_host("cl", 9)
        for h in (h1, h2):
            h.run("ip", "addr", "add", f"{vip}/32", "dev", "eth0")
        out = tmp_path / "holders.json"
        observer = Child(
            client.ns,
            [SYSTEM_PYTHON, str(OBSERVER), "--source", client.address4, "--vips", vip,
             "--duration", "3", "--out", str(out)],
            tmp_path / "holders.log",
        )  # fmt: skip
        try:
            wait_for("the observer listening", lambda: "listening" in observer.output(), 10)
            time.sleep(1)
            h2.run("ip", "addr", "del", f"{vip}/32", "dev", "eth0")
            time.sleep(1)
            h1.run("ip", "addr", "del", f"{vip}/32", "dev", "eth0")
            assert observer.proc.wait(timeout=10) == 0, observer.output()
        finally:
            observer.stop()
        got = json.loads(out.read_text())["vips"][vip]
        counts, macs = got["counts"], got["macs"]
        assert counts["2+"] >= 30 and counts["1"] >= 30 and counts["0"] >= 30, got
        assert set(macs) == {h1.mac(), h2.mac()}, got
        # In order: both, then lb1, then nobody.
        assert [c["macs"] for c in got["holder_changes"]] == [[h1.mac()], []], got

"""Failover time of our VRRP speaker against keepalived, on the same LAN in the same run.

A client namespace probes the VIP every 10 ms (TCP connect + read the answering host's
name). The master (priority 150) is SIGKILLed while a backup (priority 100) waits; the
outage is the time from the kill to the first probe the new master answers. The same with
a keepalived pair at the same advert interval, and with SIGTERM (our priority-0 hand-over).
The old master's web server is stopped together with its speaker: the host is "gone".

Where in the advert cycle the kill lands moves an outage by up to one interval, so each
round kills at a fixed offset after an advert the client saw from the master, the same
offsets for every figure: the comparison measures the implementations, not luck.

Run as root: `.venv/bin/python bench/failover.py [--rounds 5]`. Prints one line:
`bench: failover advert_ms=100 ours_outage_ms=<n> keepalived_outage_ms=<n> ratio=<ours/keepalived>
graceful_outage_ms=<n>` (on one line; medians over the rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
TAG = "aha-bench"
VIP = "198.18.20.100"
PORT = 8080
HOSTS = {"h1": "198.18.20.1", "h2": "198.18.20.2", "cl": "198.18.20.9"}

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(512)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""

PROBE = """
import socket, sys, time
vip, port = sys.argv[1], int(sys.argv[2])
tick = time.monotonic()
while True:
    try:
        with socket.create_connection((vip, port), timeout=0.01) as c:
            who = c.recv(16).decode()
        print(f"{time.time():.4f} {who}", flush=True)
    except OSError:
        pass
    tick += 0.01
    time.sleep(max(0.0, tick - time.monotonic()))
"""


WATCH = """
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
mreqn = socket.inet_aton("224.0.0.18") + bytes(4) + struct.pack("i", socket.if_nametoindex("eth0"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
while True:
    data = s.recv(2048)
    ihl = (data[0] & 15) * 4
    print(f"{time.time():.4f} {socket.inet_ntoa(data[12:16])} {data[ihl + 2]}", flush=True)
"""

OFFSETS_MS = (5, 25, 45, 65, 85)  # kill this long after a master's advert, in turn


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def ns(name: str) -> str:
    return f"{TAG}-{name}"


def cleanup() -> None:
    for line in sh("ip", "netns", "list", check=False).splitlines():
        if line.startswith(f"{TAG}-"):
            sh("ip", "netns", "del", line.split()[0], check=False)


def build_lan() -> None:
    cleanup()
    sh("ip", "netns", "add", ns("sw"))
    sh("ip", "-n", ns("sw"), "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", ns("sw"), "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
    sh("ip", "-n", ns("sw"), "link", "set", "br0", "up")
    for host, address in HOSTS.items():
        sh("ip", "netns", "add", ns(host))
        sh(
            "ip",
            "-n",
            ns("sw"),
            "link",
            "add",
            f"b{host}",
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            ns(host),
        )
        sh("ip", "-n", ns("sw"), "link", "set", f"b{host}", "master", "br0", "up")
        sh("ip", "-n", ns(host), "link", "set", "lo", "up")
        sh("ip", "-n", ns(host), "link", "set", "eth0", "up")
        sh("ip", "-n", ns(host), "addr", "add", f"{address}/24", "dev", "eth0")


class Proc:
    """A child in a namespace, stopped by its PID and waited on."""

    def __init__(self, host: str, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns(host), *argv], stdout=self._out, stderr=subprocess.STDOUT
        )

    def kill(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.kill(sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait()
        self._out.close()


class Speaker:
    """Our speaker or keepalived, as master (150) or backup (100)."""

    def __init__(self, kind: str, host: str, priority: int, work: Path, advert_ms: int) -> None:
        self.kind, self.host = kind, host
        tag = f"{kind}-{host}-{time.monotonic_ns()}"
        if kind == "ours":
            config = work / f"{tag}.yaml"
            (work / "manifests").mkdir(exist_ok=True)
            config.write_text(
                f"cluster:\n  manifests: {work / 'manifests'}\n"
                f"pools:\n  - name: lan\n    addresses: ['{VIP}/32']\n"
                "ha:\n  interface: eth0\n  instances:\n"
                f"    - {{name: vi-1, vrid: 51, priority: {priority}, "
                f"advert_interval: {advert_ms}ms}}\n"
            )
            argv = [PYTHON, "-m", "appliance.commands.ha", "--config", str(config), "--vip", VIP]
            self.vrrp_pidfile: Path | None = None
        else:
            conf = work / f"{tag}.conf"
            conf.write_text(
                "global_defs {\n  vrrp_version 3\n  vrrp_garp_master_delay 0\n}\n"
                "vrrp_instance VI_1 {\n  interface eth0\n  state BACKUP\n"
                f"  virtual_router_id 51\n  priority {priority}\n"
                f"  advert_int {advert_ms / 1000}\n"
                f"  virtual_ipaddress {{\n    {VIP}/32 dev eth0\n  }}\n}}\n"
            )
            pid = Path(f"/run/{TAG}-{host}.pid")
            self.vrrp_pidfile = Path(f"/run/{TAG}-{host}-vrrp.pid")
            for p in (pid, self.vrrp_pidfile):
                p.unlink(missing_ok=True)  # a stale PID file stops keepalived from starting
            argv = [
                "keepalived",
                "-n",
                "-l",
                "-G",
                "-P",
                "-R",
                "-f",
                str(conf),
                "-p",
                str(pid),
                "-r",
                str(self.vrrp_pidfile),
            ]
        self.proc = Proc(host, argv, work / f"{tag}.log")

    def kill(self, sig: int) -> None:
        """SIGKILL: the VRRP process dies silently. SIGTERM: a clean stop (priority 0)."""
        if self.vrrp_pidfile is not None and sig == signal.SIGKILL:
            os.kill(int(self.vrrp_pidfile.read_text()), signal.SIGKILL)
        else:
            self.proc.kill(sig)

    def ready(self) -> bool:
        if self.vrrp_pidfile is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(self.vrrp_pidfile.read_text()) > 0
            return False
        return True

    def stop(self) -> None:
        self.proc.stop(signal.SIGTERM)
        if self.vrrp_pidfile is not None:
            self.vrrp_pidfile.unlink(missing_ok=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


def answers(log: Path, after: float) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and float(parts[0]) > after:
            out.append((float(parts[0]), parts[1]))
    return out


@contextlib.contextmanager
def lab(work: Path) -> Iterator[tuple[Path, Path]]:
    build_lan()
    probe_log, watch_log = work / "probe.log", work / "watch.log"
    probe = Proc("cl", [PYTHON, "-c", PROBE, VIP, str(PORT)], probe_log)
    watch = Proc("cl", [PYTHON, "-c", WATCH], watch_log)
    try:
        yield probe_log, watch_log
    finally:
        probe.stop(signal.SIGKILL)
        watch.stop(signal.SIGKILL)
        cleanup()


def next_advert(watch_log: Path, source: str, after: float) -> float:
    """When the client next saw an advert from `source` (with a priority) after `after`."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in watch_log.read_text().splitlines():
            parts = line.split()
            if (
                len(parts) == 3
                and parts[1] == source
                and parts[2] != "0"
                and float(parts[0]) > after
            ):
                return float(parts[0])
        time.sleep(0.001)
    raise RuntimeError(f"no advert from {source}")


def one_round(
    kind: str, sig: int, work: Path, logs: tuple[Path, Path], advert_ms: int, offset_ms: int
) -> float:
    """Master on h1, backup on h2; stop h1 (speaker and server) by `sig`: outage in ms."""
    probe_log, watch_log = logs
    servers = {
        h: Proc(h, [PYTHON, "-c", SERVER, h, str(PORT)], work / f"srv-{h}.log")
        for h in ("h1", "h2")
    }
    backup = Speaker(kind, "h2", 100, work, advert_ms)
    master: Speaker | None = None
    try:
        wait_for("backup ready", backup.ready)
        time.sleep(0.5)  # let the backup settle as master alone first, as after a reboot
        master = Speaker(kind, "h1", 150, work, advert_ms)
        start = time.time()
        wait_for(
            "h1 answering on the VIP",
            lambda: any(who == "h1" for _, who in answers(probe_log, start)[-5:]),
        )
        time.sleep(0.5)
        seen = next_advert(watch_log, HOSTS["h1"], time.time())
        time.sleep(max(0.0, seen + offset_ms / 1000 - time.time()))
        killed = time.time()
        master.kill(sig)
        servers["h1"].stop(signal.SIGKILL)
        wait_for(
            "h2 answering on the VIP",
            lambda: any(who == "h2" for _, who in answers(probe_log, killed)),
        )
        first = next(t for t, who in answers(probe_log, killed) if who == "h2")
        return (first - killed) * 1000
    finally:
        if master is not None:
            master.stop()
        backup.stop()
        for s in servers.values():
            s.stop(signal.SIGKILL)
        # The killed master may leave the VIP on h1: clear it for the next round.
        sh("ip", "-n", ns("h1"), "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
        sh("ip", "-n", ns("h2"), "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="kills per figure (>= 5)")
    parser.add_argument("--advert-ms", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: failover needs root (network namespaces)", file=sys.stderr)
        return 1
    if shutil.which("keepalived") is None:
        print("bench: failover needs keepalived (apt-get install keepalived)", file=sys.stderr)
        return 1
    figures: dict[str, list[float]] = {"ours": [], "keepalived": [], "graceful": []}
    plan = [
        ("ours", "ours", signal.SIGKILL),
        ("keepalived", "keepalived", signal.SIGKILL),
        ("graceful", "ours", signal.SIGTERM),
    ]
    with tempfile.TemporaryDirectory(prefix="aha-bench-") as tmp, lab(Path(tmp)) as logs:
        for i in range(args.rounds):
            offset = OFFSETS_MS[i % len(OFFSETS_MS)] * args.advert_ms // 100
            for figure, kind, sig in plan:  # interleaved: drift hits every figure alike
                ms = one_round(kind, sig, Path(tmp), logs, args.advert_ms, offset)
                figures[figure].append(ms)
                print(
                    f"round {i + 1} {figure}: kill {offset} ms after an advert, outage {ms:.0f} ms",
                    file=sys.stderr,
                )
    ours, theirs, graceful = (statistics.median(figures[k]) for k in figures)
    print(
        f"bench: failover advert_ms={args.advert_ms} ours_outage_ms={ours:.0f} "
        f"keepalived_outage_ms={theirs:.0f} ratio={ours / theirs:.2f} "
        f"graceful_outage_ms={graceful:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

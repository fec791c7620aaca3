"""10,000 health-check targets on loopback, checked at a 1 s interval for 30 s: by our
checker, then by HAProxy (the real peer) with the same targets, interval, timeout and
rise/fall, in the same run.

The targets are real listeners in two helper processes (not the measured one), acting
as kube-proxy's healthCheckNodePort: most answer 200 {"localEndpoints": 1}, 5 % answer
503 {"localEndpoints": 0}, 2 % answer only after 2 s (past the 0.5 s timeout), and 5 %
have no listener at all (connection refused).

Prints:

    bench: health targets=10000 checks_per_s=<n> cpu_pct=<n> p99_lateness_ms=<n>
    peer: haproxy checks_per_s=<n> cpu_pct=<n> (ours answered_per_s=<n>, haproxy <n>)

cpu_pct is the checking process's user+system CPU over the window, as a share of one
core; lateness is how long after its due time each check started. HAProxy's checks are
counted at the servers (answers given), so both are compared on that figure too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.health.checker import HealthChecker  # noqa: E402
from appliance.health.targets import Target  # noqa: E402

TARGETS = int(os.environ.get("BENCH_HEALTH_TARGETS", "10000"))
SECONDS = float(os.environ.get("BENCH_HEALTH_SECONDS", "30"))
WARMUP = 6.0  # seconds before the window: 10,000 connections opened, schedule spread
INTERVAL, TIMEOUT, RISE, FALL = 1.0, 0.5, 2, 3
SHARE_DOWN, SHARE_503, SHARE_SLOW = 0.05, 0.05, 0.02
SLOW_DELAY = 2.0
SERVERS = 2  # helper processes (each listener and its connection cost two descriptors)

# kube-proxy's layout (service_health.go): hand-printed, tab-indented JSON.
BODY = (
    b'{\n\t"service": {\n\t\t"namespace": "bench",\n\t\t"name": "svc"\n\t},\n'
    b'\t"localEndpoints": %d,\n\t"serviceProxyHealthy": true\n}'
)
OK_BODY, BAD_BODY = BODY % 1, BODY % 0


def _answer(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


ANSWERS = {"ok": _answer(b"200 OK", OK_BODY), "503": _answer(b"503 Service Unavailable", BAD_BODY)}


# --- the helper: listeners acting as kube-proxy ---------------------------------------------


def serve(spec: list[tuple[int, str]]) -> None:
    """Listen on every (port, mode); answer each request; print the count on demand."""
    count = 0

    class Handler(asyncio.Protocol):
        def __init__(self, mode: str) -> None:
            self.mode = mode
            self.buf = b""
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            nonlocal count
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                _, self.buf = self.buf.split(b"\r\n\r\n", 1)
                count += 1
                if self.mode == "slow":
                    loop.call_later(SLOW_DELAY, self.reply, ANSWERS["ok"])
                else:
                    self.reply(ANSWERS[self.mode])

        def reply(self, data: bytes) -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    async def main() -> None:
        for port, mode in spec:
            await loop.create_server(
                partial(Handler, mode), "127.0.0.1", port, backlog=64, reuse_address=True
            )
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"count":
                print(count, flush=True)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())


class Helpers:
    def __init__(self, plan: list[tuple[int, str]]) -> None:
        listening = [(p, m) for p, m in plan if m != "down"]
        self.procs = []
        for i in range(SERVERS):
            part = listening[i::SERVERS]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(part) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a helper did not start")

    def answered(self) -> int:
        total = 0
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("count\n")
            proc.stdin.flush()
            total += int(proc.stdout.readline())
        return total

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


def free_ports(n: int) -> list[int]:
    """n ports on 127.0.0.1 that nothing listens on now (bound and released), below the
    kernel's ephemeral range: an outgoing connection (ours, or anyone's) could take one
    of those between this choice and the helper's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random(1)
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < n:
        port = rng.randrange(10000, low)
        if port in seen:
            continue
        seen.add(port)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            out.append(port)
        except OSError:
            pass
        finally:
            s.close()
    return out


def target_plan() -> list[tuple[int, str]]:
    rng = random.Random(2)
    modes = []
    for port in free_ports(TARGETS):
        r = rng.random()
        mode = (
            "down"
            if r < SHARE_DOWN
            else "503"
            if r < SHARE_DOWN + SHARE_503
            else "slow"
            if r < SHARE_DOWN + SHARE_503 + SHARE_SLOW
            else "ok"
        )
        modes.append((port, mode))
    return modes


# --- ours -----------------------------------------------------------------------------------


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_ours(
    plan: list[tuple[int, str]], helpers: Helpers
) -> tuple[float, float, float, int]:
    targets = [
        Target(
            f"bench/svc{i}", "node", "kube-proxy", "127.0.0.1", port, INTERVAL, TIMEOUT, RISE, FALL
        )
        for i, (port, _) in enumerate(plan)
    ]
    checker = HealthChecker(rng=random.Random(3))
    checker.update(targets)
    task = asyncio.create_task(checker.run())
    await asyncio.sleep(WARMUP)
    checks0, cpu0, wall0 = checker.checks, cpu_seconds(), time.monotonic()
    answered0 = helpers.answered()
    checker.lateness.clear()
    await asyncio.sleep(SECONDS)
    checks1, cpu1, wall1 = checker.checks, cpu_seconds(), time.monotonic()
    answered1 = helpers.answered()
    late = sorted(checker.lateness)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    down = sum(1 for up in checker.health().values() if not up)
    expected = sum(1 for _, m in plan if m != "ok")
    if down != expected:
        raise RuntimeError(f"ours: {down} targets down, expected {expected}")
    wall = wall1 - wall0
    p99 = late[int(len(late) * 0.99)] if late else 0.0
    return (
        (checks1 - checks0) / wall,
        100 * (cpu1 - cpu0) / wall,
        p99 * 1000,
        round((answered1 - answered0) / wall),
    )


# --- the peer: HAProxy ------------------------------------------------------------------------


def haproxy_config(plan: list[tuple[int, str]], stats: str) -> str:
    lines = [
        "global",
        "    maxconn 2000",
        "    nbthread 1",
        f"    stats socket {stats} mode 600 level admin",
        "defaults",
        "    mode http",
        "    timeout connect 500ms",
        "    timeout client 5s",
        "    timeout server 5s",
        f"    timeout check {int(TIMEOUT * 1000)}ms",
        "backend targets",
        "    option httpchk GET /",
        "    http-check expect status 200",
        f"    default-server check inter {int(INTERVAL * 1000)} rise {RISE} fall {FALL}",
    ]
    lines += [f"    server t{i} 127.0.0.1:{port}" for i, (port, _) in enumerate(plan)]
    return "\n".join(lines) + "\n"


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def haproxy_down(stats: str) -> int:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(stats)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = [r.split(",") for r in data.decode().splitlines() if r.startswith("targets,t")]
    return sum(1 for r in rows if r[17].startswith("DOWN"))


def run_haproxy(plan: list[tuple[int, str]], helpers: Helpers) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="ahc-bench-") as tmp:
        stats = f"{tmp}/stats.sock"
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(haproxy_config(plan, stats))
        err = Path(tmp) / "haproxy.err"
        with err.open("wb") as err_file:
            proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
        try:
            time.sleep(WARMUP)
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {err.read_text().strip()[-300:]}")
            print("# haproxy: measuring", file=sys.stderr, flush=True)
            answered0, cpu0, wall0 = helpers.answered(), proc_cpu(proc.pid), time.monotonic()
            time.sleep(SECONDS)
            answered1, cpu1, wall1 = helpers.answered(), proc_cpu(proc.pid), time.monotonic()
            print("# haproxy: reading its verdicts", file=sys.stderr, flush=True)
            down = haproxy_down(stats)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    expected = sum(1 for _, m in plan if m != "ok")
    if down != expected:
        print(f"# haproxy: {down} targets down, expected {expected}", file=sys.stderr)
    wall = wall1 - wall0
    answered = (answered1 - answered0) / wall
    # Every check of a listening target is answered; refused ones are checks as well.
    listening = sum(1 for _, m in plan if m != "down")
    return answered * len(plan) / listening, 100 * (cpu1 - cpu0) / wall, round(answered)


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        serve([tuple(x) for x in json.loads(sys.stdin.readline())])
        return 0
    # Thousands of targets going down at start would log a line each; the figures matter here.
    logging.getLogger("appliance.health").setLevel(logging.ERROR)
    plan = target_plan()
    helpers = Helpers(plan)
    try:
        rate, cpu, p99, answered = asyncio.run(run_ours(plan, helpers))
        print(
            f"bench: health targets={TARGETS} checks_per_s={rate:.0f} cpu_pct={cpu:.0f} "
            f"p99_lateness_ms={p99:.0f}",
            flush=True,
        )
        if shutil.which("haproxy") is None:
            print("peer: haproxy not installed (apt-get install haproxy)", flush=True)
            return 0
        h_rate, h_cpu, h_answered = run_haproxy(plan, helpers)
        print(
            f"peer: haproxy checks_per_s={h_rate:.0f} cpu_pct={h_cpu:.0f} "
            f"(ours answered_per_s={answered}, haproxy {h_answered})",
            flush=True,
        )
    finally:
        helpers.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:  # helpers just die; the main process stops them first
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())

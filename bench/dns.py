"""dnsperf against our DNS server and against knotd, same zone, same workers, one run.

The zone: 10,000 LoadBalancer Services (an A and an SRV each). The query mix: A for
existing Services (70 %), SRV (15 %), AAAA that has no data (10 %), names that do not
exist (5 %). Each server gets `WORKERS` UDP workers (knotd `udp-workers`, ours UDP
threads). dnsperf (4 clients, 200 queries in flight) runs `SECONDS` s against each, in
alternating halves, then once more with -v against ours to read per-query latencies.
Prints:

    bench: dns ours_qps=<n> knot_qps=<n> ratio=<ours/knot> ours_p99_ms=<n>
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from appliance.config import DnsConfig
from appliance.dns.zone import build_zone, render_zonefile
from appliance.model import Record

ZONE = "k8s.example.com"
SERVICES = 10_000
SECONDS = int(os.environ.get("BENCH_DNS_SECONDS", "10"))
WORKERS = int(os.environ.get("BENCH_DNS_WORKERS", "1"))
ROOT = Path(__file__).resolve().parent.parent


def records() -> list[Record]:
    out = []
    for i in range(SERVICES):
        base = f"svc{i}.ns{i % 100}.svc.{ZONE}"
        vip = f"198.18.{i // 250}.{i % 250 + 1}"
        out.append(Record(base, "A", vip, 5, f"Service ns{i % 100}/svc{i}"))
        out.append(Record(f"_http._tcp.{base}", "SRV", base, 5, "", 0, 100, 80))
    return out


def queries(rng: random.Random, n: int = 20_000) -> str:
    lines = []
    for _ in range(n):
        i = rng.randrange(SERVICES)
        base = f"svc{i}.ns{i % 100}.svc.{ZONE}"
        roll = rng.random()
        if roll < 0.70:
            lines.append(f"{base} A")
        elif roll < 0.85:
            lines.append(f"_http._tcp.{base} SRV")
        elif roll < 0.95:
            lines.append(f"{base} AAAA")
        else:
            lines.append(f"missing{i}.ns{i % 100}.svc.{ZONE} A")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    for _ in range(100):
        port = random.randrange(20000, 60000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_answering(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        r = subprocess.run(
            ["kdig", "-p", str(port), "@127.0.0.1", f"svc1.ns1.svc.{ZONE}", "A", "+time=1"],
            capture_output=True,
            text=True,
            check=False,
        )
        if "status: NOERROR" in r.stdout and "198.18.0.2" in r.stdout:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer on port {port}")


def dnsperf(port: int, qfile: Path, seconds: int, verbose: bool = False) -> str:
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile)]
    cmd += ["-l", str(seconds), "-c", "4", "-q", "200", "-t", "2"]
    if verbose:
        cmd.append("-v")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def completed(report: str) -> tuple[int, float]:
    """(queries completed, run time in s) from a dnsperf report."""
    done = re.search(r"Queries completed:\s+(\d+)", report)
    took = re.search(r"Run time \(s\):\s+([\d.]+)", report)
    if not done or not took:
        raise RuntimeError(f"unexpected dnsperf output:\n{report[-2000:]}")
    return int(done.group(1)), float(took.group(1))


def p99_ms(verbose_report: str) -> float:
    # dnsperf -v: "> NOERROR svc1.ns1.svc.k8s.example.com A 0.000123"
    latencies = sorted(
        float(line.rsplit(None, 1)[1])
        for line in verbose_report.splitlines()
        if line.startswith(">") and line.rsplit(None, 1)[-1][:1].isdigit()
    )
    if not latencies:
        raise RuntimeError("dnsperf -v printed no latencies")
    return latencies[int(len(latencies) * 0.99)] * 1000


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def knot_conf(workdir: Path, port: int) -> Path:
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
    udp-workers: {WORKERS}
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{workdir}"
log:
  - target: stderr
    any: error
zone:
  - domain: {ZONE}
    file: "{workdir}/{ZONE}.zone"
    journal-content: none
    zonefile-sync: -1
"""
    )
    return conf


def main() -> int:
    for tool in ("knotd", "kdig", "dnsperf"):
        if shutil.which(tool) is None:
            print(f"bench: dns needs {tool} (apt-get install knot knot-dnsutils dnsperf)")
            return 1
    rng = random.Random(5)
    recs = records()
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        work = Path(tmp)
        qfile = work / "queries.txt"
        qfile.write_text(queries(rng))
        (work / "records.json").write_text(json.dumps([asdict(r) for r in recs]))
        zone = build_zone(recs, DnsConfig(zones=(ZONE,)), 1)
        (work / f"{ZONE}.zone").write_text(render_zonefile(zone, ZONE))

        port, kport = free_port(), free_port()
        serve = ["--records", str(work / "records.json"), "--zone", ZONE]
        serve += ["--listen", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
        ours = subprocess.Popen(
            [sys.executable, "-m", "appliance.commands.dns", "dns", "serve", *serve],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        knot = subprocess.Popen(["knotd", "-c", str(knot_conf(work, kport))])
        try:
            wait_answering(port, ours, "our server")
            wait_answering(kport, knot, "knotd")
            # Both warm (a first pass of the query file each), then the measured runs
            # alternate in halves so a busy neighbour on the machine hits both alike.
            dnsperf(port, qfile, 1)
            dnsperf(kport, qfile, 1)
            totals = {port: [0, 0.0], kport: [0, 0.0]}
            for _ in range(2):
                for p in (port, kport):
                    done, took = completed(dnsperf(p, qfile, max(1, SECONDS // 2)))
                    totals[p][0] += done
                    totals[p][1] += took
            p99 = p99_ms(dnsperf(port, qfile, max(2, SECONDS // 3), verbose=True))
        finally:
            stop(ours)
            stop(knot)
        ours_qps = totals[port][0] / totals[port][1]
        knot_qps = totals[kport][0] / totals[kport][1]

    print(
        f"bench: dns ours_qps={ours_qps:.0f} knot_qps={knot_qps:.0f} "
        f"ratio={ours_qps / knot_qps:.2f} ours_p99_ms={p99:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

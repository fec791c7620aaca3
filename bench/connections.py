"""bench: the cost of reading active connections (nftables backend) against the raw tool.

A namespace of its own with our nft table (250 VIP:ports x 10 nodes) and N conntrack
entries loaded with `conntrack -R` (60 % ESTABLISHED TCP to our services, 20 % TIME_WAIT,
10 % UDP, 10 % flows to somebody else's address). Prints one line:
  bench: connections backend=nftables flows=<N> read_s=<median s> conntrack_s=<median s>
         ratio=<read/conntrack> counted=<flows counted> expected=<flows that should count>
                                                                  (one line, wrapped here)
`conntrack_s` is `conntrack -L` alone, output thrown away: the floor any reader pays.

    python bench/connections.py [--flows N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.dataplane.nft import NftablesBackend  # noqa: E402
from appliance.model import DesiredState, RealServer, VirtualService  # noqa: E402

NS = "adp-ctbench"
TABLE = "adp_ctbench"
SERVICES, NODES = 250, 10


def sh(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, input=stdin, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{argv[3:]}: {r.stderr.strip()[-300:]}")
    return r


def desired() -> DesiredState:
    nodes = tuple(RealServer(f"node{i}", f"198.18.31.{i + 2}") for i in range(NODES))
    services = tuple(
        VirtualService(f"198.18.32.{i + 1}", 80, "TCP", "rr", 30080, nodes, f"bench/s{i}")
        for i in range(SERVICES)
    )
    return DesiredState({}, services, (), (), (), ())


def flows(n: int) -> tuple[str, int]:
    """conntrack -R lines, and how many of them are active flows of our services."""
    lines: list[str] = []
    active = 0
    for i in range(n):
        vip = f"198.18.32.{i % SERVICES + 1}"
        node = f"198.18.31.{i % NODES + 2}"
        client = f"198.18.{40 + i // 60000}.{i // 250 % 250 + 1}"
        sport = 1024 + i % 60000
        masq = f"198.18.31.{200 + i // 60000}"  # the LB's source for the node: unique replies
        kind = i % 10
        if kind < 8:
            state = "ESTABLISHED" if kind < 6 else "TIME_WAIT"
            active += kind < 6
            lines.append(
                f"-I -p tcp -s {client} -d {vip} --sport {sport} --dport 80 -r {node} "
                f"-q {masq} --reply-port-src 30080 --reply-port-dst {sport} "
                f"--state {state} -t 600 -u SEEN_REPLY,ASSURED"
            )
        elif kind == 8:  # UDP to port 53: not a service of this table
            lines.append(
                f"-I -p udp -s {client} -d {vip} --sport {sport} --dport 53 -r {node} "
                f"-q {masq} --reply-port-src 30053 --reply-port-dst {sport} -t 600"
            )
        else:  # not ours: to an address outside the VIPs, not translated
            lines.append(
                f"-I -p tcp -s {client} -d 198.18.33.1 --sport {sport} --dport 80 "
                f"-r 198.18.33.1 -q {client} --reply-port-src 80 --reply-port-dst {sport} "
                "--state ESTABLISHED -t 600 -u SEEN_REPLY,ASSURED"
            )
    return "\n".join(lines) + "\n", active


def median_seconds(rounds: int, fn: object) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        backend = NftablesBackend(table=TABLE, netns=NS, check_sysctls=False)
        asyncio.run(backend.apply(desired()))  # also turns conntrack on in the namespace
        script, expected = flows(args.flows)
        with tempfile.NamedTemporaryFile("w", suffix=".ct") as f:
            f.write(script)
            f.flush()
            sh("ip", "netns", "exec", NS, "conntrack", "-R", f.name)

        result: list[dict[tuple[str, int, str], dict[str, int]]] = []

        def ours() -> None:
            got = asyncio.run(backend.connections())
            result.append({k: dict(v) for k, v in got.items()})

        def raw() -> None:
            argv = ["ip", "netns", "exec", NS, "conntrack", "-L"]
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

        read_s = median_seconds(args.rounds, ours)
        raw_s = median_seconds(args.rounds, raw)
        counted = sum(n for nodes in result[-1].values() for n in nodes.values())
        print(
            f"bench: connections backend=nftables flows={args.flows} read_s={read_s:.4f} "
            f"conntrack_s={raw_s:.4f} ratio={read_s / raw_s:.2f} counted={counted} "
            f"expected={expected}"
        )
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)


if __name__ == "__main__":
    main()

"""bench: requests per second through a VIP (nftables DNAT + masquerade) vs straight to the
node, same namespaces, same client, same server. Prints
  bench: throughput via_vip_rps=<n> direct_rps=<n> ratio=<via/direct>

Each request is a new TCP connection (connect, one line, the node's name back, close):
that is where a load balancer's per-connection work (conntrack, NAT) shows.

    python bench/throughput.py [--seconds S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "netns" / "dataplane"))

VIP = "198.18.32.1"


async def _load(dst: str, port: int, seconds: float, concurrency: int) -> int:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(dst, port)
            writer.write(b"hi\n")
            await reader.readline()
            writer.close()
            await writer.wait_closed()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def client_main(dst: str, port: int, seconds: float, concurrency: int) -> None:
    print(asyncio.run(_load(dst, port, seconds, concurrency)), flush=True)


def measure(dst: str, port: int, seconds: float, concurrency: int) -> float:
    from adp_lab import CLIENT  # type: ignore[import-not-found,unused-ignore]

    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            CLIENT,
            sys.executable,
            __file__,
            "--client",
            dst,
            str(port),
            str(seconds),
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip().splitlines()[-1]) / seconds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        dst, port, seconds, conc = args.client
        client_main(dst, int(port), float(seconds), int(conc))
        return 0

    from adp_lab import CLIENT, LB, LB_NODE_SIDE, NODES, Lab, in_ns  # type: ignore[import-not-found,unused-ignore]

    from appliance.dataplane.nft import NftablesBackend
    from appliance.model import DesiredState, RealServer, VirtualService

    lab = Lab()
    try:
        lab.up()
        node = NODES["node1"]
        # One node behind the VIP, the same node straight: only the path differs.
        vs = VirtualService(VIP, 80, "TCP", "rr", 30080, (RealServer("node1", node),), "b/w")
        backend = NftablesBackend(table="adp_bench", netns=LB)
        asyncio.run(backend.apply(DesiredState({}, (vs,), (), (), (), ())))
        # The direct path: routed through the LB without NAT, so node1 needs a way back.
        in_ns(CLIENT, "ip", "route", "add", "198.18.31.0/24", "via", "198.18.30.1")
        in_ns("adp-node1", "ip", "route", "add", "198.18.30.0/24", "via", LB_NODE_SIDE)
        measure(VIP, 80, 1.0, args.concurrency)  # warm up both paths
        measure(node, 30080, 1.0, args.concurrency)
        via = measure(VIP, 80, args.seconds, args.concurrency)
        direct = measure(node, 30080, args.seconds, args.concurrency)
        via2 = measure(VIP, 80, args.seconds, args.concurrency)  # interleave against drift
        direct2 = measure(node, 30080, args.seconds, args.concurrency)
        via, direct = (via + via2) / 2, (direct + direct2) / 2
        print(
            f"bench: throughput via_vip_rps={via:.0f} direct_rps={direct:.0f}"
            f" ratio={via / direct:.2f}"
        )
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

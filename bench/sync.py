"""bench: how fast the dataplane converges, against the raw tool loading the same rules.

10,000 Services x 2 ports x 10 real servers. For each backend prints one line:
  bench: sync backend=<nftables|ipvs> full_s=<s> raw_tool_s=<s> ratio=<full/raw>
         noop_s=<s> one_change_s=<s>                      (one line, wrapped here)
nftables runs on the host in a namespace of its own (raw tool: `nft -f` of our script);
IPVS runs inside the qemu VM of tests/vm (raw tool: `ipvsadm-restore` of our table).

    python bench/sync.py [--backend nftables|ipvs|both] [--services N] [--vm-services N]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.config import DataplaneConfig, Pool  # noqa: E402
from appliance.dataplane.base import Ownership  # noqa: E402
from appliance.dataplane.ipvs import IpvsBackend  # noqa: E402
from appliance.dataplane.ipvsrules import restore_script  # noqa: E402
from appliance.dataplane.nft import NftablesBackend  # noqa: E402
from appliance.model import DesiredState, RealServer, VirtualService  # noqa: E402

NS = "adp-bench"
TABLE = "adp_bench"


def desired(services: int, ports: int = 2, servers: int = 10) -> DesiredState:
    """Services spread over the 250 VIPs of 198.18.32.0/24, two ports each."""
    nodes = tuple(RealServer(f"node{i}", f"198.18.31.{i + 2}") for i in range(servers))
    out: list[VirtualService] = []
    for i in range(services):
        vip = f"198.18.32.{i % 250 + 1}"
        for p in range(ports):
            port = 1000 + (i // 250) * ports + p
            out.append(
                VirtualService(
                    vip,
                    port,
                    "TCP",
                    "rr",
                    30000 + (i * ports + p) % 2768,
                    nodes,
                    f"bench/svc{i}",
                    f"p{p}",
                )
            )
    return DesiredState({}, tuple(out), (), (), (), ())


def one_change(state: DesiredState) -> DesiredState:
    """One endpoint of one service moves to another node."""
    vs = state.virtual_services[len(state.virtual_services) // 2]
    moved = replace(vs, real_servers=(*vs.real_servers[:-1], RealServer("nodeX", "198.18.31.250")))
    services = list(state.virtual_services)
    services[len(services) // 2] = moved
    return replace(state, virtual_services=tuple(services))


def sh(*argv: str, stdin: bytes | None = None) -> None:
    subprocess.run(argv, input=stdin, check=True, capture_output=True)


def line(backend: str, full: float, raw: float, noop: float, change: float) -> str:
    return (
        f"bench: sync backend={backend} full_s={full:.3f} raw_tool_s={raw:.3f}"
        f" ratio={full / raw:.2f} noop_s={noop:.4f} one_change_s={change:.4f}"
    )


def bench_nftables(services: int) -> str:
    state = desired(services)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        backend = NftablesBackend(DataplaneConfig(), table=TABLE, netns=NS)
        script = backend.script(state).encode()
        t0 = time.perf_counter()
        sh("ip", "netns", "exec", NS, "nft", "-f", "-", stdin=script)
        raw = time.perf_counter() - t0
        sh("ip", "netns", "exec", NS, "nft", "delete", "table", "inet", TABLE)
        full, noop, change = _converge(backend, state)
        return line("nftables", full, raw, noop, change)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)


def _converge(backend: NftablesBackend | IpvsBackend, state: DesiredState) -> tuple[float, ...]:
    t0 = time.perf_counter()
    asyncio.run(backend.apply(state))
    full = time.perf_counter() - t0
    print(f"# full apply: {full:.3f}s", flush=True)
    same = replace(state, virtual_services=tuple(state.virtual_services))  # a fresh plan
    t0 = time.perf_counter()
    report = asyncio.run(backend.apply(same))
    noop = time.perf_counter() - t0
    assert report.unchanged, report
    t0 = time.perf_counter()
    report = asyncio.run(backend.apply(one_change(state)))
    change = time.perf_counter() - t0
    assert len(report.changed) == 1, report
    return full, noop, change


def bench_ipvs_inside(services: int) -> str:
    """Runs in the VM's root namespace: ours alone."""
    state = desired(services)
    sh("modprobe", "ip_vs")
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.vs.conntrack=1")
    sh(
        "sysctl",
        "-qw",
        "net.ipv4.vs.expire_nodest_conn=1",
        "net.ipv4.vs.expire_quiescent_template=1",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".ipvs") as f:
        f.write(restore_script(state.virtual_services))
        f.flush()
        t0 = time.perf_counter()
        with open(f.name, "rb") as src:
            subprocess.run(["ipvsadm-restore"], stdin=src, check=True)
        raw = time.perf_counter() - t0
    sh("ipvsadm", "-C")
    pool = Pool("bench", ((_ip("198.18.32.0"), _ip("198.18.32.255")),))
    print(f"# ipvsadm-restore: {raw:.3f}s", flush=True)
    backend = IpvsBackend(DataplaneConfig(), Ownership.of_pools([pool]))
    try:
        full, noop, change = _converge(backend, state)
    finally:
        backend.close()
    return line("ipvs", full, raw, noop, change)


def _ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def bench_ipvs_vm(services: int) -> str:
    sys.path.insert(0, str(ROOT / "tests" / "vm"))
    from qemu import run, why_not  # type: ignore[import-not-found,unused-ignore]

    why = why_not()
    if why:
        return f"bench: sync backend=ipvs skipped: {why}"
    result = run(
        f"{sys.executable} bench/sync.py --inside-vm --services {services}",
        timeout=1800,
        cwd=ROOT,
    )
    output: str = result.output
    print("\n".join(x for x in output.splitlines() if x.startswith("# ")), flush=True)
    found = [x for x in output.splitlines() if x.startswith("bench: sync")]
    if result.rc != 0 or not found:
        return (
            f"bench: sync backend=ipvs failed in the VM: {result.output[-800:] or result.console}"
        )
    return found[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=("nftables", "ipvs", "both"), default="both")
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--vm-services", type=int, default=None, help="IPVS scale in the VM")
    p.add_argument("--inside-vm", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inside_vm:
        print(bench_ipvs_inside(args.services), flush=True)
        return 0
    if args.backend in ("nftables", "both"):
        print(f"# nftables: {args.services} services x 2 ports x 10 real servers", flush=True)
        print(bench_nftables(args.services), flush=True)
    if args.backend in ("ipvs", "both"):
        n = args.vm_services or args.services
        print(f"# ipvs (qemu TCG VM): {n} services x 2 ports x 10 real servers", flush=True)
        print(bench_ipvs_vm(n), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench: from a Service created on the API server to its status patched.

The API server is the stand-in (tests/support/fake_apiserver.py; kube-apiserver cannot
run here) in a process of its own, like the real one. It creates N LoadBalancer Services
at a steady rate and notes, on one monotonic clock (system-wide on Linux), when each was
created and when the PATCH of its status arrived. Two controllers take turns against a
fresh server:

- the appliance: KubeSource -> Planner -> StatusWriter, as the daemon runs them;
- a peer: the least a controller can do, one watch and an immediate PATCH of a counter
  address per new Service, no model, no plan. Its figures are the floor the stand-in
  and the HTTP round trips set.

Prints one line:
  bench: kube create_to_status_ms_p50=<n> p99=<n> peer_p50=<n> peer_p99=<n> services=<N> rate=<r>/s

    python bench/kube.py [--services 1000] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from appliance.cluster.kube import KubeSource  # noqa: E402
from appliance.config import ClusterConfig, Config, Pool  # noqa: E402
from appliance.kube.api import Connection, KubeApi  # noqa: E402
from appliance.kube.status import StatusWriter  # noqa: E402
from appliance.plan import Planner  # noqa: E402

TOKEN = "bench-token"


# --- the API server process ------------------------------------------------------------------


def service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:05d}", "namespace": f"ns-{i % 20}"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": f"a{i}"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }


async def serve(services: int, rate: float) -> None:
    from tests.support.fake_apiserver import FakeApiServer

    fake = FakeApiServer(token=TOKEN, bookmark_interval=60)
    created: dict[str, float] = {}
    patched: dict[str, float] = {}
    done = asyncio.Event()

    def seen(method: str, path: str) -> None:
        if method == "PATCH" and path.endswith("/status"):
            name = path.split("/")[-2]
            if name in created and name not in patched:
                patched[name] = time.monotonic()
                if len(patched) == services:
                    done.set()

    fake.on_request = seen
    for n in range(3):
        fake.create(
            "nodes",
            {
                "metadata": {"name": f"node{n}"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{n + 10}"}]},
            },
        )
    async with fake:
        print(fake.port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        start = time.monotonic()
        for i in range(services):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            obj = service(i)
            created[obj["metadata"]["name"]] = time.monotonic()
            fake.create("services", obj)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
    latencies = [(patched[k] - created[k]) * 1000 for k in patched]
    print(json.dumps({"ms": latencies, "missing": services - len(patched)}), flush=True)


# --- the controllers ---------------------------------------------------------------------------


async def appliance(url: str, services: int, ready: asyncio.Event) -> None:
    first = ipaddress.IPv4Address("198.18.64.0")
    last = first + services + 10
    config = Config(pools=(Pool("bench", ((first, last),)),), cluster=ClusterConfig(kubeconfig="x"))
    async with KubeApi(Connection(url, token=TOKEN)) as api:
        source = KubeSource(api)
        planner = Planner(config)
        writer = StatusWriter(api, config)
        async with contextlib.aclosing(source.watch()) as states:
            async for state in states:
                ready.set()
                await writer.sync(state, planner.plan(state))


async def peer(url: str, services: int, ready: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    patch_headers = {**headers, "Content-Type": "application/merge-patch+json"}
    base = ipaddress.ip_address("198.18.64.0")
    count = 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/v1/services", headers=headers) as r:
            version = (await r.json())["metadata"]["resourceVersion"]
        params = {"watch": "true", "resourceVersion": version}
        async with session.get(
            f"{url}/api/v1/services", params=params, headers=headers, timeout=None
        ) as r:
            ready.set()
            pending: set[asyncio.Task[None]] = set()
            while line := await r.content.readline():
                event = json.loads(line)
                meta = event["object"]["metadata"]
                if event["type"] != "ADDED":
                    continue
                ip = str(base + count)
                count += 1
                path = f"{url}/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status"
                body = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})

                async def send(path: str = path, body: str = body) -> None:
                    async with session.patch(path, data=body, headers=patch_headers) as resp:
                        await resp.read()

                task = asyncio.create_task(send())
                pending.add(task)
                task.add_done_callback(pending.discard)


async def run(controller: str, services: int, rate: float) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--services",
        str(services),
        "--rate",
        str(rate),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        port = int(await child.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        ready = asyncio.Event()
        run_it = appliance if controller == "appliance" else peer
        task = asyncio.create_task(run_it(url, services, ready))
        await asyncio.wait_for(ready.wait(), 30)
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        result: dict[str, Any] = json.loads(await child.stdout.readline())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task
        return result
    finally:
        if child.returncode is None:
            child.terminate()
        await child.wait()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="Services created per second")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.services, args.rate))
        return 0
    ours = asyncio.run(run("appliance", args.services, args.rate))
    theirs = asyncio.run(run("peer", args.services, args.rate))
    for name, result in (("appliance", ours), ("peer", theirs)):
        if result["missing"]:
            print(f"# {name}: {result['missing']} Services never got a status patch", flush=True)
    a, b = ours["ms"], theirs["ms"]
    print(
        f"bench: kube create_to_status_ms_p50={percentile(a, 50):.1f} p99={percentile(a, 99):.1f}"
        f" peer_p50={percentile(b, 50):.1f} peer_p99={percentile(b, 99):.1f}"
        f" services={args.services} rate={args.rate:g}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

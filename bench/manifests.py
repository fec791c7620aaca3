"""Reading a 10,000-object manifests folder, against the floors set by real tools.

The folder: 100 files of 100 objects (2,500 LoadBalancer Services, 2,500 EndpointSlices
with 3 endpoints, 5,000 Deployments we ignore), written as `kubectl get -o yaml` would.
Figures, medians of 5 runs each:

- load: `FilesSource.load()` (read, parse, validate, build the snapshot) against PyYAML's
  C loader alone on the same files (`yaml.load_all` with CSafeLoader, no validation):
  what is left above that ratio is our validation and model building.
- poll: `FilesSource.poll()` with nothing changed against `find -printf` printing the
  same stat fields for the same files (an external process doing the same system calls).
- change: `poll()` after one file of the 100 changed (re-read and rebuild).

Prints one line:
`bench: manifests objects=10000 load_s=<n> yaml_only_s=<n> load_ratio=<n> poll_ms=<n>
find_ms=<n> change_ms=<n>` (on one line).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.cluster.files import FilesSource  # noqa: E402

FILES = 100
PER_FILE = 100
RUNS = 5


def objects(f: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(PER_FILE // 4):
        n = f * PER_FILE + i
        name = f"svc-{n}"
        meta = {
            "name": name,
            "namespace": f"ns-{f}",
            "uid": f"00000000-0000-4000-8000-{n:012d}",
            "resourceVersion": str(1000 + n),
            "creationTimestamp": "2026-11-03T10:00:00Z",
            "labels": {"app": name},
        }
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "type": "LoadBalancer",
                    "clusterIP": f"198.18.{96 + n // 65000}.{n // 250 % 250}",
                    "externalTrafficPolicy": "Cluster",
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000 + n},
                    ],
                    "selector": {"app": name},
                },
                "status": {"loadBalancer": {}},
            }
        )
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "addressType": "IPv4",
                "metadata": {
                    "name": f"{name}-abcde",
                    "namespace": f"ns-{f}",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "endpoints": [
                    {
                        "addresses": [f"198.19.{n % 250}.{k + 1}"],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": f"node-{k}",
                    }
                    for k in range(3)
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        )
        for d in range(2):
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": f"{name}-{d}", "namespace": f"ns-{f}"},
                    "spec": {"replicas": 3, "template": {"spec": {"containers": []}}},
                }
            )
    return out


def median_s(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-manifests-") as tmp:
        folder = Path(tmp)
        for f in range(FILES):
            (folder / f"f{f:03d}.yaml").write_text(yaml.safe_dump_all(objects(f)))
        old = time.time() - 10  # no file is "racily clean": poll must be stat only
        for p in folder.iterdir():
            os.utime(p, (old, old))

        source = FilesSource(folder)
        state = source.load()
        count = len(state.services) + sum(len(s) for s in state.endpoint_slices.values())
        assert count == FILES * PER_FILE // 2 and not state.refused, state.refused[:3]

        load_s = median_s(lambda: FilesSource(folder).load())
        paths = sorted(folder.iterdir())

        def yaml_only() -> None:
            for p in paths:
                list(yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader))

        yaml_s = median_s(yaml_only)

        def poll() -> None:
            assert source.poll() is None

        poll_s = median_s(poll, 20)
        find_cmd = ["find", str(folder), "-name", "*.yaml", "-printf", "%T@ %C@ %s %i %p\n"]
        find_s = median_s(lambda: subprocess.run(find_cmd, check=True, capture_output=True), 20)

        edits = [0]

        def change() -> None:
            edits[0] += 1
            target = paths[37]
            target.write_text(target.read_text().replace("port: 80\n", "port: 81\n", 1))
            os.utime(target, (old + edits[0], old + edits[0]))
            assert source.poll() is not None
            source.poll()  # settle

        change_s = median_s(change)

    print(
        f"bench: manifests objects={FILES * PER_FILE} load_s={load_s:.2f}"
        f" yaml_only_s={yaml_s:.2f} load_ratio={load_s / yaml_s:.2f}"
        f" poll_ms={poll_s * 1000:.2f} find_ms={find_s * 1000:.2f}"
        f" change_ms={change_s * 1000:.1f}"
    )


if __name__ == "__main__":
    main()

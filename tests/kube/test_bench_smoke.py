"""bench/kube.py runs and prints its one line (figures are not checked: timings never
decide a test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_its_line() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "kube.py"), "--services", "20", "--rate", "100"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    ).stdout
    number = r"[0-9]+(\.[0-9]+)?"
    line = (
        rf"bench: kube create_to_status_ms_p50={number} p99={number} "
        rf"peer_p50={number} peer_p99={number} services=20 rate=100/s"
    )
    assert re.fullmatch(line, out.strip().splitlines()[-1]), out
    assert "never got a status patch" not in out

"""The announcer follows the latest hold/release, not every one in turn: a takeover of
thousands of VIPs undone at once (a master that yields a moment later) stops early and
leaves nothing on the interface; a release undone by a hold leaves everything. Observed
with `ip monitor address` (every address the kernel added) and `ip addr`."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

from ha_lan import PYTHON, Child, Host, Lan, wait_for

N = 8000
FIRST = int(ipaddress.ip_address("198.19.0.0"))

SCRIPT = """
import asyncio, ipaddress, sys
from appliance.ha.announce import Announcer

async def main(n: int, order: str) -> None:
    a = Announcer("eth0", garp_count=0)
    await a.start()
    first = int(ipaddress.ip_address("198.19.0.0"))
    vips = [str(ipaddress.ip_address(first + i)) for i in range(n)]
    if order == "release-after-hold":
        await asyncio.gather(a.hold(vips), a.release(vips))
    else:
        await a.hold(vips[:10])
        await asyncio.gather(a.release(vips[:10]), a.hold(vips))
    print("held", len(a.held), flush=True)
    await a.close()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def _vips_on(host: Host) -> set[str]:
    out = host.run("ip", "-4", "-o", "addr", "show", "dev", host.ifname).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if " 198.19." in line}


def _run(host: Host, tmp_path: Path, order: str) -> int:
    """The sequence in `host`; how many of the VIPs the kernel added meanwhile."""
    script = tmp_path / "announce.py"
    script.write_text(SCRIPT)
    monitor = Child(host.ns, ["ip", "-4", "-o", "monitor", "address"], tmp_path / "mon.log")
    try:
        time.sleep(0.3)  # ip monitor has no "listening" line: give it time to subscribe
        done = subprocess.run(
            ["ip", "netns", "exec", host.ns, PYTHON, str(script), str(N), order],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)
    finally:
        monitor.stop()
    lines = monitor.output().splitlines()
    return sum(1 for line in lines if " 198.19." in line and not line.startswith("Deleted"))


def test_a_release_right_after_a_hold_stops_the_adds_and_leaves_nothing(
    ha_lan: Lan, tmp_path: Path
) -> None:
    host = ha_lan.add_host("h1", 1)
    added = _run(host, tmp_path, "release-after-hold")
    assert _vips_on(host) == set()
    # One batch at most went in before the release was seen; queued in turn it was all N.
    assert 0 < added < N / 2, f"{added} of {N} VIPs added before the release took effect"


def test_a_hold_right_after_a_release_leaves_every_vip(ha_lan: Lan, tmp_path: Path) -> None:
    host = ha_lan.add_host("h1", 1)
    _run(host, tmp_path, "hold-after-release")
    wait_for("every VIP on the interface", lambda: len(_vips_on(host)) == N, 30)

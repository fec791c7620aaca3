"""Clean start and stop: a VIP on the interface that this host does not hold (a killed
run's leftover) is removed when the speaker starts, and `appliance ha --release` (the
unit's ExecStopPost) removes every pool address after the daemon died. `ip addr` observes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ha_lan import NET4, PYTHON, REPO, Lan, Ours, appliance_yaml, wait_for

HELD = f"{NET4}100"
STRAYS = (f"{NET4}105", f"{NET4}121")  # pools lan4 and lan4b
FOREIGN = f"{NET4}200"  # in no pool: not ours to touch
INSTANCE = [{"name": "vi-1", "vrid": 53, "priority": 100, "advert_interval": "100ms"}]


def test_start_removes_vips_this_host_does_not_hold(ha_lan: Lan, tmp_path: Path) -> None:
    h1 = ha_lan.add_host("h1", 1)
    for address in (*STRAYS, FOREIGN):
        h1.run("ip", "addr", "add", f"{address}/32", "dev", "eth0")
    assert {*STRAYS, FOREIGN} <= h1.addresses()
    ours = Ours(h1, appliance_yaml(tmp_path, INSTANCE), tmp_path, "a", [HELD])
    try:
        wait_for("master", lambda: ours.states() == {"vi-1": "master"})
        wait_for("the held VIP on eth0", lambda: HELD in h1.addresses())
        addresses = h1.addresses()
        assert not set(STRAYS) & addresses, addresses
        assert FOREIGN in addresses
    finally:
        ours.stop()
    assert "Traceback" not in ours.child.output()
    assert "removed 198.18.20.105, a VIP this host does not hold" in ours.child.output()


def test_release_after_the_daemon_died(ha_lan: Lan, tmp_path: Path) -> None:
    h1 = ha_lan.add_host("h1", 1)
    config = tmp_path / "a.yaml"
    config.write_text(appliance_yaml(tmp_path, INSTANCE))
    for address in (HELD, *STRAYS, FOREIGN):
        h1.run("ip", "addr", "add", f"{address}/32", "dev", "eth0")
    done = subprocess.run(
        ["ip", "netns", "exec", h1.ns, PYTHON, "-m", "appliance.commands.ha",
         "--config", str(config), "--release"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(
        f"removed {a} from eth0" for a in (HELD, *STRAYS)
    )
    addresses = h1.addresses()
    assert not {HELD, *STRAYS} & addresses
    assert {FOREIGN, h1.address4} <= addresses

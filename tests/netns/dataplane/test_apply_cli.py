"""`appliance apply` for real, twice, in a namespace of its own: the second run sends nothing
and leaves `nft list table` byte-identical."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_dataplane_command import site

pytestmark = pytest.mark.root
NS = "adp-cli"
APPLY = (
    "import argparse, sys\n"
    "from appliance.commands.apply import register\n"
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='command'))\n"
    "a = p.parse_args(['apply', *sys.argv[1:]]); a.config = a.config_opt\n"
    "sys.exit(a.func(a))\n"
)


@pytest.fixture
def namespace() -> Iterator[str]:
    if shutil.which("nft") is None:
        pytest.skip("needs the nft command (apt-packages.txt)")
    subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)
    probe = subprocess.run(["ip", "netns", "add", NS], check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    try:
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)


def apply(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-c", APPLY, "--config", str(config), *extra],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )


def listing() -> str:
    return subprocess.run(
        ["ip", "netns", "exec", NS, "nft", "list", "table", "inet", "appliance"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_apply_twice_changes_nothing_the_second_time(namespace: str, tmp_path: Path) -> None:
    config = site(tmp_path)
    missing = apply(config, "--dataplane", "nftables")
    assert missing.returncode == 1
    assert "net.ipv4.ip_forward=0" in missing.stderr and len(missing.stderr.splitlines()) == 1
    subprocess.run(
        ["ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
    )
    first = apply(config, "--dataplane", "nftables")
    assert first.returncode == 0, first.stderr
    assert "+1 ~0 -0" in first.stdout
    table = listing()
    assert "198.18.32.0 . 80 . 0 : 198.18.31.2 . 30080" in table
    second = apply(config, "--dataplane", "nftables")
    assert second.returncode == 0, second.stderr
    assert "+0 ~0 -0" in second.stdout
    assert listing() == table

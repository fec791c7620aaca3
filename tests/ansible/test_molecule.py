"""Molecule on real systemd hosts: podman containers from a debootstrapped Debian 12.

`molecule test` runs playbooks/site.yml (converge), runs it again and fails on any change
(idempotence), then molecule/default/verify.yml: the service active under systemd as its
own user with exactly CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE and CAP_SYS_NICE,
/readyz answering, a config change reloading the same process, a bad inventory value refused by
the argument specs, the node's VIP on lo, the VRRP process beside the daemon and a
killed daemon's VIPs gone from ha0 (ExecStopPost) before systemd restarts it. The first
run builds the image (~2 min).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from pathlib import Path

import pytest

from appliance.lab import image
from tests.ansible.conftest import BIN, ROOT, build_wheels, exclusive, run
from tests.support import lock

pytestmark = pytest.mark.root


def test_molecule_default_scenario() -> None:
    why = image.why_not()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("needs root (rootful podman: systemd containers with runc)")
    report = ROOT / "build" / "ansible" / "lb1-venv.json"
    report.unlink(missing_ok=True)
    with exclusive():
        out = _molecule_test(image.image(), build_wheels(), report)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    # Each step ran and passed (molecule's recap names them).
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"{step}: Executed: Successful", plain), plain[-4000:]
    # The verify playbook ran its checks on both hosts, none failed.
    assert re.search(r"aan-lb1\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", plain)
    assert re.search(r"aan-node1\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", plain)
    # The LB host's venv (pip's own list, from the host) is exactly uv.lock's runtime part.
    installed = lock.pip_list(json.loads(report.read_text()))
    assert lock.differences(installed, lock.closure()) == []
    assert installed.get("appliance") == importlib.metadata.version("appliance")


def _molecule_test(name: str, wheels: Path, report: Path) -> str:
    return run(
        [str(BIN / "molecule"), "test", "--scenario-name", "default"],
        env={
            "AAN_IMAGE": name,
            "AAN_WHEELS": str(wheels),
            "AAN_VENV_REPORT": str(report),
            "CONTAINERS_CONF": str(image.containers_conf()),
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",  # the containers' own python3
            "MOLECULE_NO_LOG": "false",
        },
        timeout=600,
    )

"""roles/lb_kernel for real: in the IPVS VM of tests/vm (Debian's 6.1 kernel under TCG).

The role runs on the guest itself (connection local) with its defaults: load ip_vs, the
schedulers and nf_conntrack, set and persist the sysctls. Then the guest's own /proc/modules
and sysctl, not the role, say what happened. TCG makes every module call slow: the one
playbook run takes ~140 s, so it runs once (idempotence is Molecule's job).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.ansible.conftest import ROOT
from tests.vm import qemu

pytestmark = pytest.mark.root

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh")
MODULES = ("ip_vs", "nf_conntrack", *(f"ip_vs_{s}" for s in SCHEDULERS))
SYSCTLS = {
    "net.ipv4.vs.conntrack": "1",
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.vs.conn_reuse_mode": "1",
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.ip_nonlocal_bind": "1",
}


def _section(output: str, name: str) -> str:
    part = output.split(f"== {name}\n", 1)
    assert len(part) == 2, f"no {name} section:\n{output[-3000:]}"
    return part[1].split("\n== ", 1)[0]


def test_lb_kernel_role_in_the_ipvs_vm() -> None:
    why = qemu.why_not()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("needs root (9p export of / for the guest)")
    result = qemu.run("sh tests/ansible/vm_kernel.sh", timeout=420, cwd=ROOT)
    assert result.rc == 0, f"the guest did not finish (rc={result.rc}):\n{result.console}"
    out = result.output
    assert re.search(r"playbook-rc=0 ", out), out[-5000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0", out)

    loaded = set(_section(out, "/proc/modules").split())
    assert set(MODULES) <= loaded, f"not loaded: {sorted(set(MODULES) - loaded)}"

    live = dict(
        line.split(" = ", 1) for line in _section(out, "sysctl").splitlines() if " = " in line
    )
    assert live == SYSCTLS

    # The boot-time files hold the same, one entry per line.
    files = _section(out, "files").splitlines()
    assert set(MODULES) <= set(files), files
    assert {f"{k}={v}" for k, v in SYSCTLS.items()} <= set(files), files
    # IPVS answers through its netlink family (ipvsadm is the observer).
    assert "IP Virtual Server version" in _section(out, "ipvsadm")

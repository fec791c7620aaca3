"""Real IPVS: boot Debian's kernel once and run the whole IPVS session inside it."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qemu import ROOT, run, why_not

pytestmark = pytest.mark.root


def test_ipvs_session_in_vm() -> None:
    why = why_not()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("needs root (9p export of / and namespaces in the guest)")
    python = shlex.quote(sys.executable)
    cases = "tests/vm/guest/ipvs_cases.py"
    result = run(
        f"modprobe ip_vs && {python} -m pytest -q -p no:cacheprovider -o addopts='' {cases}",
        timeout=330,
        cwd=ROOT,
    )
    assert result.rc is not None, f"the guest never finished:\n{result.console}"
    assert result.rc == 0, f"guest pytest failed (rc={result.rc}):\n{result.output}"
    # Every case ran (none skipped or deselected inside the guest).
    cases = (Path(__file__).parent / "guest" / "ipvs_cases.py").read_text().count("\ndef test_")
    assert re.search(rf"\b{cases} passed", result.output), result.output

"""The lock is the truth: this venv is exactly uv.lock, the LB hosts' requirements are its
runtime part, and `make lint` says what to run when pyproject.toml moved without it."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

from packaging.requirements import Requirement

from appliance.lab import image
from tests.support import lock

REPO = Path(__file__).resolve().parents[2]
UV = REPO / "build" / "tools" / "bin" / "uv"


def test_this_venv_holds_exactly_the_locked_versions() -> None:
    installed = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    assert lock.differences(installed, lock.closure(("dev",))) == []


def test_the_hosts_requirements_are_the_locks_runtime_part(tmp_path: Path) -> None:
    text = image.locked_requirements(tmp_path / "requirements.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    # Every pin carries its hashes (pip --require-hashes refuses the file otherwise).
    assert entries and all("--hash=sha256:" in e for e in entries), text[:2000]
    pinned = {}
    for entry in entries:
        req = Requirement(entry.split(" \\\n", 1)[0])
        if req.marker is None or req.marker.evaluate():  # what pip installs on this host
            (spec,) = req.specifier
            assert spec.operator == "==", entry
            pinned[req.name] = spec.version
    assert lock.differences(pinned, lock.closure()) == []


def _project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def _lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "lock-check"), str(UV), str(project)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_lint_passes_a_lock_that_matches(tmp_path: Path) -> None:
    done = _lock_check(_project(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_lint_names_make_lock_when_pyproject_moved_alone(tmp_path: Path) -> None:
    project = _project(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '"PyYAML>=6.0",' in text
    pyproject.write_text(text.replace('"PyYAML>=6.0",', '"PyYAML>=6.0", "attrs>=20",'))
    done = _lock_check(project)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "lint: uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock"
    ]

"""What the Ansible tests share: the ansible/molecule environment and the wheels."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from appliance.lab import image

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The venv's bin first on PATH (molecule calls ansible-config), our roles, no colour."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
        PY_COLORS="0",
        # connection local: modules run with this Python, not whatever discovery finds first
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    env.update(extra or {})
    return env


def run(argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """Run a tool from the venv in the repository; its output, or a failure showing it."""
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=ansible_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{out[-6000:]}")
    return out


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One Molecule run at a time on this machine: runs share the container names, the
    wheels folder and Molecule's state directory (keyed on the project's path)."""
    path = ROOT / "build" / "ansible" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_wheels() -> Path:
    """The appliance wheel and its dependencies (hosts in tests reach no index)."""
    return image.wheels(ROOT / "build" / "ansible" / "wheels")

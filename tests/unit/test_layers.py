"""The import contracts of `make lint` (pyproject.toml, import-linter) are live: on a copy
of the package, each one breaks when a reverse import is added, and all hold unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "appliance", tmp_path / "appliance",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head = "from __future__ import annotations\n"
    assert head in text, module
    module.write_text(text.replace(head, head + "\n" + line + "\n", 1))


def test_the_package_as_it_is_keeps_every_contract(tree: Path) -> None:
    done = lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") == 4


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("model.py", "import appliance.cli", "nothing imports the CLI"),
        ("plan/ipam.py", "import appliance.dataplane.nft",
         "the pure core imports no adapter, daemon or command"),
        ("address.py", "import appliance.ha.speaker",
         "the pure core imports no adapter, daemon or command"),
        ("status.py", "import appliance.web.app",
         "the pure core imports no adapter, daemon or command"),
        ("ha/speaker.py", "import appliance.daemon.loop",
         "adapters import no daemon, wiring or command"),
        ("daemon/loop.py", "import appliance.commands.common",
         "the daemon imports neither the wiring nor a command"),
        ("daemon/loop.py", "import appliance.wiring",
         "the daemon imports neither the wiring nor a command"),
        ("web/app.py", "import appliance.wiring",
         "adapters import no daemon, wiring or command"),
    ],
)  # fmt: skip
def test_a_reverse_import_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    add_import(tree / "appliance" / module, line)
    done = lint(tree)
    assert done.returncode != 0, done.stdout
    assert f"{contract} BROKEN" in done.stdout, done.stdout

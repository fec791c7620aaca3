"""What uv.lock pins, read straight from the lock (not through uv or pip): the reference the
tests hold installed venvs against, ours and the LB hosts'."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.markers import Marker

LOCK = Path(__file__).resolve().parents[2] / "uv.lock"
PROJECT = "appliance"
# A venv brings its installer along; the lock need not name it.
SEEDED = frozenset({"pip", "setuptools", "wheel"})


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages() -> dict[str, dict[str, object]]:
    data = tomllib.loads(LOCK.read_text())
    return {canonical(p["name"]): p for p in data["package"]}


def closure(extras: tuple[str, ...] = ()) -> dict[str, str]:
    """The project's locked dependencies on this Python and platform, with the project's
    `extras` (and the extras its dependencies ask for): () is what an LB host needs."""
    packages = _packages()
    wanted: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(PROJECT, extras)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, asked = todo.pop()
        if (name, asked) in seen:
            continue
        seen.add((name, asked))
        package = packages[name]
        deps = list(package.get("dependencies", []))  # type: ignore[call-overload]
        optional = package.get("optional-dependencies", {})
        for extra in asked:
            deps += optional.get(extra, [])  # type: ignore[union-attr]
        for dep in deps:
            dep_name = canonical(dep["name"])
            marker = dep.get("marker")
            if marker and not Marker(marker).evaluate({"extra": ""}):
                continue
            wanted[dep_name] = str(packages[dep_name]["version"])
            todo.append((dep_name, tuple(dep.get("extra", ()))))
    return wanted


def differences(installed: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """One line per package where `installed` is not exactly `wanted` (seeded tools and the
    project aside): a wrong version, one missing, one the lock does not name."""
    have = {canonical(n): v for n, v in installed.items()}
    lines = [
        f"{n}: installed {have.get(n, 'nothing')}, locked {v}"
        for n, v in sorted(wanted.items())
        if have.get(n) != v
    ]
    lines += [
        f"{n}: installed {v}, not in the lock"
        for n, v in sorted(have.items())
        if n not in wanted and n not in SEEDED and n != PROJECT
    ]
    return lines


def pip_list(rows: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """`pip list --format=json` as name -> version."""
    return {row["name"]: row["version"] for row in rows}

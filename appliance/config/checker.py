"""The collecting checker of appliance.yaml: every read returns a usable value and records
what was wrong as `(path, message)`, so one run reports every problem.

Also the words errors are made of: paths (`pools[1].addresses[0]`), what a value was
(`a string ('x')`), close-match hints.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from appliance.config.values import fmt_seconds, parse_duration

T = TypeVar("T")
Errors = list[tuple[str, str]]  # (path, message)
_PLAIN_KEY = re.compile(r"[\w./-]+")

# --- paths and descriptions ---------------------------------------------------------------


def join_key(path: str, key: str) -> str:
    # A key that would break the one-line format (or look like path syntax) is quoted.
    if not _PLAIN_KEY.fullmatch(key):
        key = repr(key)
    return f"{path}.{key}" if path else key


def join_index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def found(value: object) -> str:
    """What a value is, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return f"a date ({value})"  # YAML reads 2024-01-01 as a date
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def quote_hint(value: object) -> str:
    if isinstance(value, bool):
        return " (quote it: YAML reads yes/no/on/off/true/false as booleans)"
    if isinstance(value, int | float | date):
        return " (quote it)"
    return ""


def camel_to_snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def suggest(word: str, choices: Sequence[str]) -> str | None:
    snake = camel_to_snake(word)
    if snake in choices:
        return snake
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1)
        close = [c for c in choices if close and c.lower() == close[0]]
    return close[0] if close else None


# --- the checker --------------------------------------------------------------------------


@dataclass
class Checker:
    """Collects errors while reading one document. Every method returns a usable value
    (the default when the input is bad) so checking continues and reports everything."""

    errors: Errors
    base_dir: Path | None = None

    def err(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def mapping(
        self,
        value: object,
        path: str,
        allowed: Sequence[str],
        what: str = "a mapping",
        *,
        nullable: bool = True,
    ) -> dict[str, Any]:
        """A mapping with only `allowed` keys; null counts as empty where `nullable`."""
        if value is None and nullable:
            return {}
        if not isinstance(value, dict):
            self.err(path or "(top level)", f"must be {what}, got {found(value)}")
            return {}
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                self.err(path or "(top level)", f"key {short(k)} is not a known key")
                continue
            if k not in allowed:
                hint = suggest(k, allowed)
                more = (
                    f"did you mean {hint!r}?" if hint else f"expected one of: {', '.join(allowed)}"
                )
                self.err(join_key(path, k), f"unknown key ({more})")
                continue
            out[k] = v
        return out

    def seq(self, value: object, path: str, what: str = "a list") -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(path, f"must be {what}, got {found(value)}")
            return []
        return value

    def boolean(self, d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in d:
            return default
        v = d[key]
        if isinstance(v, bool):
            return v
        if isinstance(v, str):
            self.err(
                join_key(path, key),
                f"must be true or false, got a string ({short(v)}): write true or false "
                "without quotes",
            )
        else:
            self.err(join_key(path, key), f"must be true or false, got {found(v)}")
        return default

    def integer(
        self, d: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int
    ) -> int:
        if key not in d:
            return default
        v = d[key]
        what = f"must be an integer from {lo} to {hi}"
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(join_key(path, key), f"{what}, got {found(v)}")
            return default
        if not lo <= v <= hi:
            self.err(join_key(path, key), f"{what}, got {v}")
            return default
        return v

    def string(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: T,
        *,
        nullable: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | T:
        """A non-empty string; `check` returns an error message or None."""
        if key not in d:
            return default
        v = d[key]
        if v is None and nullable:
            return default
        if not isinstance(v, str):
            self.err(join_key(path, key), f"must be a string, got {found(v)}{quote_hint(v)}")
            return default
        if not v:
            self.err(join_key(path, key), "must not be empty")
            return default
        problem = check(v) if check else None
        if problem:
            self.err(join_key(path, key), problem)
            return default
        return v

    def choice(
        self, d: Mapping[str, Any], key: str, path: str, default: str, choices: Sequence[str]
    ) -> str:
        if key not in d:
            return default
        v = d[key]
        what = f"must be one of {', '.join(choices)}"
        if not isinstance(v, str):
            self.err(join_key(path, key), f"{what}, got {found(v)}")
            return default
        if v not in choices:
            hint = suggest(v, choices)
            self.err(
                join_key(path, key),
                f"{what}, got {v!r}" + (f" (did you mean {hint!r}?)" if hint else ""),
            )
            return default
        return v

    def duration(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        lo: float = 0.0,
        hi: float = 31_536_000.0,
    ) -> float:
        if key not in d:
            return default
        v = d[key]
        seconds = parse_duration(v)
        if seconds is None:
            self.err(
                join_key(path, key),
                "must be a duration (seconds, or a string like '100ms', '2s', '1.5s', '5m'),"
                f" got {found(v)}",
            )
            return default
        if not lo <= seconds <= hi:
            self.err(
                join_key(path, key),
                f"must be from {fmt_seconds(lo)} to {fmt_seconds(hi)}, got {fmt_seconds(seconds)}",
            )
            return default
        return seconds


def resolve(c: Checker, path_text: str) -> str:
    """A path from the file, relative to the file's folder (kept as written without one)."""
    if c.base_dir is None or os.path.isabs(path_text):
        return path_text
    return str(c.base_dir / path_text)

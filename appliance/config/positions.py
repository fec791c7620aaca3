"""The YAML side of appliance.yaml: parse a file safely, remember where each value is.

`read_yaml` gives the data together with the line of every path (`pools[1].name`), so
errors can say `<file>:<line>:`, and finds duplicate keys, which YAML loaders silently
resolve by keeping the last one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.config.checker import Errors, join_index, join_key

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FAST_NESTING = 10_000
MAX_DEPTH = 12  # the deepest path: pools[].service_selector.match_expressions[].values[]


class YamlError(Exception):
    """The file is not YAML we can read; the message is one line naming file and place."""


@dataclass(frozen=True)
class YamlDocument:
    data: object  # what yaml.safe_load would give; None for an empty document
    lines: Mapping[str, int]  # path -> 1-based line
    duplicates: Errors  # (path, message) for every repeated key

    def line_of(self, path: str) -> int | None:
        return line_of(path, self.lines)


def read_yaml(raw: bytes, name: str) -> YamlDocument:
    """Parse one YAML document; every failure is a YamlError, never a crash."""
    loader = _loader_for(raw)(raw)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        where = _where(name, e.problem_mark or e.context_mark)
        context = f" ({_one_line(e.context)})" if e.context else ""
        problem = _one_line(e.problem or "")
        raise YamlError(f"{where}: invalid YAML: {problem}{context}") from None
    except RecursionError:
        # No mark on the exception, but the pure-Python reader knows where it stopped.
        get_mark = getattr(loader, "get_mark", None)
        where = _where(name, get_mark() if get_mark is not None else None)
        raise YamlError(f"{where}: invalid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:
        raise YamlError(f"{name}: invalid YAML: {_one_line(str(e))}") from None
    finally:
        loader.dispose()
    duplicates: Errors = []
    lines = node_lines(node, duplicates)
    return YamlDocument(data, lines, duplicates)


def node_lines(node: yaml.Node | None, errors: Errors) -> dict[str, int]:
    """Path -> 1-based line of every node, and an error for every duplicate key."""
    lines: dict[str, int] = {}
    seen: set[int] = set()

    def walk(n: yaml.Node, path: str, depth: int = 0) -> None:
        # Nothing the checker reads is deeper than MAX_DEPTH; stopping there keeps a
        # hostile nesting from exhausting the stack.
        if id(n) in seen or depth > MAX_DEPTH:  # seen: an alias, mapped at its anchor
            return
        seen.add(id(n))
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            keys: dict[str, int] = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or k.value == "<<":
                    continue
                kp = join_key(path, str(k.value))
                line = k.start_mark.line + 1
                if k.value in keys:
                    errors.append((kp, f"duplicate key (also on line {keys[k.value]})"))
                else:
                    keys[k.value] = line
                lines[kp] = line
                walk(v, kp, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, join_index(path, i), depth + 1)

    if node is not None:
        walk(node, "")
    return lines


def line_of(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        shorter = re.sub(r"(\[\d+\]|\.?[^.\[]*)$", "", path)
        if shorter == path:
            return None
        path = shorter
    return None


def _where(name: str, mark: yaml.Mark | None) -> str:
    """`<file>:<line>:<column>` (1-based) when YAML says where, else just `<file>`."""
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _loader_for(raw: bytes) -> Any:
    """libyaml composes nested nodes by C recursion, so a hostile nesting crashes the whole
    process (200,000 levels segfault). Every level needs one of these characters: below the
    bound libyaml is safe; above it the pure-Python loader fails with RecursionError."""
    if sum(raw.count(c) for c in (b"[", b"{", b"-", b":", b"?")) <= MAX_FAST_NESTING:
        return _Loader
    return yaml.SafeLoader

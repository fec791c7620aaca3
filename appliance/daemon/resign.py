"""Planned handovers: the VRRP instances the operator resigned (`appliance ha resign`),
and until when. An instance resigned here is held in Fault by the speaker: as master it
sends priority 0 (the peer takes over after Skew_Time), and it takes nothing back until it
is resumed or its time is up.

Kept in `state_dir/resigned.json` (atomically), so a restart during the maintenance it
was made for (an upgrade of this very daemon) does not take the VIPs back early. A file
that cannot be read is refused with one line: nothing is resigned then.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from appliance.daemon.statestore import write_atomically

log = structlog.get_logger("appliance.daemon")

FILE_NAME = "resigned.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Resignation:
    instance: str
    since: float  # epoch seconds
    until: float | None  # None: until resumed

    def reason(self) -> str:
        if self.until is None:
            return "resigned by the operator (until `appliance ha resume`)"
        at = time.strftime("%H:%M:%S", time.gmtime(self.until))
        return f"resigned by the operator until {at} UTC"


class ResignError(ValueError):
    """A request that names no instance of ours, or a bad duration: one line."""


class Resignations:
    def __init__(self, path: str | None, instances: Sequence[str]) -> None:
        self.path = path
        self.instances = tuple(instances)
        self._by_name: dict[str, Resignation] = {}

    @classmethod
    def in_dir(cls, state_dir: str, instances: Sequence[str]) -> Resignations:
        return cls(os.path.join(state_dir, FILE_NAME), instances)

    def load(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not version {VERSION}")
            found = {
                str(r["instance"]): Resignation(
                    str(r["instance"]),
                    float(r["since"]),
                    None if r["until"] is None else float(r["until"]),
                )
                for r in data["resigned"]
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error(f"state file {self.path} refused: {e}; no instance is resigned",
                      file=self.path)  # fmt: skip
            return
        self._by_name = {n: r for n, r in found.items() if n in self.instances}

    def resign(self, instance: str | None, seconds: float | None, now: float) -> list[str]:
        """Resign one instance (None: every one) for `seconds` (None: until resumed)."""
        names = self._names(instance)
        if seconds is not None and not 0 < seconds <= 7 * 86400:
            raise ResignError(f"--for must be more than 0 and at most 7 days, got {seconds:g} s")
        until = None if seconds is None else now + seconds
        for name in names:
            self._by_name[name] = Resignation(name, now, until)
        self._save()
        return names

    def resume(self, instance: str | None) -> list[str]:
        names = [n for n in self._names(instance) if n in self._by_name]
        for name in names:
            del self._by_name[name]
        self._save()
        return names

    def active(self, now: float) -> dict[str, str]:
        """Instance -> why it is held; those whose time is up are resumed here."""
        over = [n for n, r in self._by_name.items() if r.until is not None and r.until <= now]
        for name in over:
            del self._by_name[name]
            log.info(f"{name}: resignation over: taking part in VRRP again", instance=name)
        if over:
            self._save()
        return {n: r.reason() for n, r in sorted(self._by_name.items())}

    def held(self) -> list[Resignation]:
        """Every resignation in force, by instance name."""
        return [r for _, r in sorted(self._by_name.items())]

    def listing(self) -> list[dict[str, Any]]:
        return [
            {"instance": r.instance, "since": r.since, "until": r.until, "reason": r.reason()}
            for r in self.held()
        ]

    def _names(self, instance: str | None) -> list[str]:
        if instance is None:
            if not self.instances:
                raise ResignError("no VRRP instances: nothing to resign")
            return list(self.instances)
        if instance not in self.instances:
            raise ResignError(
                f"no VRRP instance {instance!r} (instances: {', '.join(self.instances)})"
            )
        return [instance]

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": VERSION,
            "resigned": [
                {"instance": r.instance, "since": r.since, "until": r.until}
                for _, r in sorted(self._by_name.items())
            ],
        }
        try:
            write_atomically(self.path, json.dumps(data, indent=1).encode() + b"\n")
        except OSError as e:
            log.error(f"state file {self.path}: cannot write: {e.strerror or e}", file=self.path)

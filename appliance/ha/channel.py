"""The narrow channel between the daemon and its VRRP process: JSON lines on two pipes.

Pure: messages to and from bytes, the HA config and the pools in a form that crosses a
pipe, and the speaker's status as the child reports it. What goes down (daemon -> child):

    {"op": "start", "ha": {...}, "pools": [...], "wait_for_plan": true}
    {"op": "vips", "groups": {"<instance>": {"add": [...], "del": [...]}}, "planned": true}
    {"op": "track", "failing": {"dataplane": "why", ...}}
    {"op": "hold", "instances": {"<instance>": "why", ...}}
    {"op": "stop"}

and up (child -> daemon):

    {"op": "started"} | {"op": "error", "message": "..."}
    {"op": "status", "transition": "<instance>" | null, "status": {...}}
    {"op": "stopped"}

VIP groups travel as deltas in chunks of at most CHUNK addresses, so neither side ever
parses (or the child ever applies) a megabyte at once.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from appliance.config import HaConfig, Pool, TrackConfig, TrackInterface, VrrpInstance
from appliance.ha.group import canonical
from appliance.ha.status import HaStatus, InstanceStatus

CHUNK = 1000  # addresses per "vips" message
LINE_LIMIT = 1 << 24  # bytes: a reader's bound for one line (a CHUNK is ~40 kB)


class ChannelError(ValueError):
    """A line that is not a message of this channel."""


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as e:
        raise ChannelError(f"not JSON: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ChannelError("not a message (no op)")
    return message


# --- start -------------------------------------------------------------------------------


def start_message(ha: HaConfig, pools: Sequence[Pool], wait_for_plan: bool) -> dict[str, Any]:
    return {
        "op": "start",
        "ha": asdict(ha),
        # The child needs the pools only to recognise a VIP left on the interface.
        "pools": [
            {"name": p.name, "ranges": [[str(a), str(b)] for a, b in p.ranges]} for p in pools
        ],
        "wait_for_plan": wait_for_plan,
    }


def read_start(message: Mapping[str, Any]) -> tuple[HaConfig, tuple[Pool, ...], bool]:
    try:
        ha = dict(message["ha"])
        instances = tuple(VrrpInstance(**_tuples(i)) for i in ha.pop("instances"))
        track = dict(ha.pop("track"))
        interfaces = tuple(TrackInterface(**i) for i in track.pop("interfaces"))
        pools = tuple(
            Pool(
                p["name"],
                tuple(
                    (ipaddress.ip_address(a), ipaddress.ip_address(b))  # type: ignore[misc]
                    for a, b in p["ranges"]
                ),
            )
            for p in message["pools"]
        )
        ha["track"] = TrackConfig(interfaces=interfaces, **track)
        return HaConfig(instances=instances, **ha), pools, bool(message["wait_for_plan"])
    except (KeyError, TypeError, ValueError) as e:
        raise ChannelError(f"bad start message: {e!r}") from None


def _tuples(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has lists where the config has tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


# --- VIP deltas --------------------------------------------------------------------------


def vips_messages(
    deltas: Mapping[str, tuple[Sequence[str], Sequence[str]]], planned: bool
) -> Iterator[dict[str, Any]]:
    """Deltas per instance as (added, removed), in messages of at most CHUNK addresses.
    Only the last message carries `planned`: the child leaves the planless priority once
    it has the whole plan, not a part of it."""
    pending: list[tuple[str, str, str]] = [
        (name, kind, address)
        for name, (added, removed) in deltas.items()
        for kind, addresses in (("del", removed), ("add", added))
        for address in addresses
    ]
    starts = range(0, len(pending), CHUNK) if pending else range(1)
    for start in starts:
        groups: dict[str, dict[str, list[str]]] = {}
        for name, kind, address in pending[start : start + CHUNK]:
            groups.setdefault(name, {"add": [], "del": []})[kind].append(address)
        last = start + CHUNK >= len(pending)
        yield {"op": "vips", "groups": groups, "planned": planned and last}


def read_vips(message: Mapping[str, Any]) -> tuple[dict[str, tuple[list[str], list[str]]], bool]:
    try:
        groups = {
            str(name): (_addresses(g.get("add", [])), _addresses(g.get("del", [])))
            for name, g in message["groups"].items()
        }
        return groups, bool(message.get("planned", False))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ChannelError(f"bad vips message: {e!r}") from None


def _addresses(values: Iterable[Any]) -> list[str]:
    return [canonical(v) for v in values]


def read_track(message: Mapping[str, Any]) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in message["failing"].items()}
    except (AttributeError, KeyError, TypeError) as e:
        raise ChannelError(f"bad track message: {e!r}") from None


def read_hold(message: Mapping[str, Any]) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in message["instances"].items()}
    except (AttributeError, KeyError, TypeError) as e:
        raise ChannelError(f"bad hold message: {e!r}") from None


# --- status ------------------------------------------------------------------------------


def status_message(
    status: HaStatus, exceptions: Mapping[str, tuple[bool, Sequence[str]]], transition: str | None
) -> dict[str, Any]:
    """`status` without per-VIP lists; `exceptions[instance]` says what is held compactly:
    (True, missing) = the whole group but `missing`, (False, held) = only `held`."""
    instances = []
    for i in status.instances:
        data = asdict(i)
        del data["vips"], data["holding"]
        holds_all, listed = exceptions.get(i.name, (False, ()))
        data["holds_all"], data["except"] = holds_all, list(listed)
        instances.append(data)
    return {
        "op": "status",
        "transition": transition,
        "status": {
            "interface": status.interface,
            "dropped": dict(status.dropped),
            "garps_sent": status.garps_sent,
            "failing": dict(status.failing),
            "instances": instances,
        },
    }


@dataclass(frozen=True, slots=True)
class Reported:
    """One instance as the child reported it; the group itself is the daemon's."""

    status: InstanceStatus  # vips and holding empty
    holds_all: bool
    listed: tuple[str, ...]

    def holding(self, group: Sequence[str]) -> tuple[str, ...]:
        listed = set(self.listed)  # once: a set per member was 50,000 x 50,000 steps
        if self.holds_all:
            return tuple(v for v in group if v not in listed) if listed else tuple(group)
        return tuple(v for v in group if v in listed) if listed else ()


@dataclass(frozen=True, slots=True)
class Status:
    interface: str
    dropped: dict[str, int]
    garps_sent: int
    failing: dict[str, str]
    instances: list[Reported]


def read_status(message: Mapping[str, Any]) -> Status:
    try:
        s = message["status"]
        reported = []
        for data in s["instances"]:
            d = dict(data)
            holds_all, listed = bool(d.pop("holds_all")), tuple(d.pop("except"))
            d["dropped"] = {str(k): int(v) for k, v in d["dropped"].items()}
            d["peers"] = tuple(d["peers"])
            reported.append(Reported(InstanceStatus(vips=(), holding=(), **d), holds_all, listed))
        return Status(
            str(s["interface"]),
            {str(k): int(v) for k, v in s["dropped"].items()},
            int(s["garps_sent"]),
            {str(k): str(v) for k, v in s.get("failing", {}).items()},
            reported,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ChannelError(f"bad status message: {e!r}") from None

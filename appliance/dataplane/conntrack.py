"""Conntrack for the dataplane: forget UDP flows to a backend that left, as kube-proxy
does, and count the active flows per real server (nftables has no ActiveConn of its own).

UDP has no end: without forgetting, a client that keeps sending (DNS, syslog) stays pinned
by its conntrack entry to a node that no longer serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
from collections.abc import Container, Iterable
from dataclasses import dataclass

from appliance.dataplane.base import DataplaneError, run_tool


async def forget_udp(vip: str, port: int, backend: str, netns: str | None = None) -> int:
    """Delete UDP conntrack entries VIP:port -> backend; returns how many went."""
    family = "ipv6" if ":" in vip else "ipv4"
    rc, _, err = await run_tool(
        [
            "conntrack",
            "-D",
            "-f",
            family,
            "-p",
            "udp",
            "--orig-dst",
            vip,
            "--dport",
            str(port),
            "--reply-src",
            backend,
        ],
        None,
        netns,
    )
    text = err.decode(errors="replace")
    # conntrack exits 1 when nothing matched; its summary line says how many went.
    for line in text.splitlines():
        if "flow entries have been deleted" in line:
            count = line.rsplit(":", 1)[-1].split()[0]
            return int(count) if count.isdigit() else 0
    if rc != 0:
        raise DataplaneError(f"conntrack -D: {text.strip() or rc}")
    return 0


# --- counting active flows -----------------------------------------------------------------

Key = tuple[str, int, str]  # (vip, port, protocol), as VirtualService.key
FlowKey = tuple[str, int, str, str]  # (vip, port, protocol, reply source = the node)
MAX_LINES = 250_000  # flows read per count: past this the table is not cheap to count
CHUNK = 1 << 16
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
# TCP and SCTP count while ESTABLISHED (what ipvsadm calls ActiveConn); UDP has no states.
ACTIVE_STATES = {"TCP": "ESTABLISHED", "SCTP": "ESTABLISHED"}


@dataclass(frozen=True, slots=True)
class FlowCount:
    """Active DNATed flows per (vip, port, protocol, node), and how much was read."""

    counts: dict[FlowKey, int]
    lines: int
    truncated: bool  # the table had more than MAX_LINES entries; the counts are a floor


def _canonical(address: str, seen: dict[str, str]) -> str:
    """`/proc/net/nf_conntrack` spells IPv6 in full; the plan spells it compressed."""
    out = seen.get(address)
    if out is None:
        try:
            out = ipaddress.ip_address(address).compressed
        except ValueError:
            out = address
        seen[address] = out
    return out


def parse_flow(line: str, seen: dict[str, str] | None = None) -> tuple[FlowKey, bool] | None:
    """One line of `conntrack -L` (or /proc/net/nf_conntrack) -> ((original destination,
    its port, protocol, reply source), active), or None for what is not a DNATed TCP,
    UDP or SCTP flow (the reply comes from where we sent it) or a line we cannot read."""
    words = line.split()
    if len(words) < 8:
        return None
    i = 2 if words[0] in ("ipv4", "ipv6") else 0
    protocol = PROTOCOLS.get(words[i])
    if protocol is None:
        return None
    state = words[i + 3] if "=" not in words[i + 3] else ""
    src: list[str] = []
    dst = dport = ""
    for w in words[i + 3 :]:
        if w.startswith("src="):
            src.append(w[4:])
            if len(src) == 2:
                break
        elif not dst and w.startswith("dst="):
            dst = w[4:]
        elif not dport and w.startswith("dport="):
            dport = w[6:]
    if len(src) != 2 or not dst or not dport.isdigit():
        return None
    cache = seen if seen is not None else {}
    if ":" in dst:
        dst, src[1] = _canonical(dst, cache), _canonical(src[1], cache)
    if src[1] == dst:  # not translated: a flow to the host itself
        return None
    wanted = ACTIVE_STATES.get(protocol)
    return (dst, int(dport), protocol, src[1]), wanted is None or state == wanted


def count_lines(lines: Iterable[str], services: Container[Key]) -> dict[FlowKey, int]:
    """Active flows of `services` per node, from conntrack's lines (pure: unit-tested)."""
    out: dict[FlowKey, int] = {}
    seen: dict[str, str] = {}
    for line in lines:
        flow = parse_flow(line, seen)
        if flow is None or not flow[1]:
            continue
        key = flow[0]
        if key[:3] in services:
            out[key] = out.get(key, 0) + 1
    return out


async def count_active(
    services: Container[Key], netns: str | None = None, limit: int = MAX_LINES
) -> FlowCount:
    """Read the conntrack table (both families) and count the active flows of `services`.
    Reads at most `limit` lines, in chunks: a huge table costs bounded time and memory."""
    argv = ["conntrack", "-L"]
    if shutil.which("conntrack") is None and os.path.exists("/proc/net/nf_conntrack"):
        argv = ["cat", "/proc/net/nf_conntrack"]  # the same lines, with a family prefix
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as e:
        raise DataplaneError(f"{full[0]}: not installed ({e.strerror})") from None
    assert proc.stdout is not None and proc.stderr is not None
    counts: dict[FlowKey, int] = {}
    lines = 0
    truncated = False
    rest = b""
    try:
        while True:
            chunk = await proc.stdout.read(CHUNK)
            if not chunk:
                break
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            if lines + len(parts) > limit:
                parts = parts[: limit - lines]
                truncated = True
            lines += len(parts)
            for key, n in count_lines(
                (p.decode(errors="replace") for p in parts), services
            ).items():
                counts[key] = counts.get(key, 0) + n
            if truncated:
                break
        if rest and not truncated:
            lines += 1
            for key, n in count_lines([rest.decode(errors="replace")], services).items():
                counts[key] = counts.get(key, 0) + n
    finally:
        if truncated or proc.stdout.at_eof() is False:  # stopped early, or cancelled
            if proc.returncode is None:
                proc.kill()
            # A child of the tool may hold the pipes; we wait for the tool, a moment only.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)
            err, rc = b"", 0
        else:
            err = await proc.stderr.read()
            rc = await proc.wait()
    if rc != 0 and not truncated:
        text = err.decode(errors="replace").strip()
        raise DataplaneError(f"{argv[0]} -L: {text.splitlines()[-1] if text else rc}")
    return FlowCount(counts, lines, truncated)

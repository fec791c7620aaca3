"""Forget UDP flows to a backend that left, as kube-proxy does.

UDP has no end: without this, a client that keeps sending (DNS, syslog) stays pinned by
its conntrack entry to a node that no longer serves it.
"""

from __future__ import annotations

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

"""Kernel settings a backend needs, checked once at start: a missing one is one clear line."""

from __future__ import annotations

from collections.abc import Iterable

from appliance.dataplane.base import DataplaneError, run_tool

FORWARDING: dict[str, tuple[str, ...]] = {
    "IPv4": ("net.ipv4.ip_forward",),
    "IPv6": ("net.ipv6.conf.all.forwarding",),
}
# IPVS NAT with masquerade on the reply path needs conntrack to follow IPVS's rewrite;
# the other two are kube-proxy's: packets of a connection whose real server was deleted
# (a finished drain, or UDP) are expired instead of silently dropped until timeout, and
# persistence templates pointing at a weight-0 (draining) server expire too.
IPVS = (
    "net.ipv4.vs.conntrack",
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.expire_quiescent_template",
)


def _path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


async def read(name: str, netns: str | None = None) -> str | None:
    """The value as text, or None when the kernel has no such setting (module not loaded)."""
    if netns is None:
        try:
            with open(_path(name)) as f:
                return f.read().strip()
        except OSError:
            return None
    rc, out, _ = await run_tool(["cat", _path(name)], None, netns)
    return out.decode().strip() if rc == 0 else None


async def require(names: Iterable[str], backend: str, netns: str | None = None) -> None:
    """Raise one DataplaneError naming every setting that is not 1, and how to fix it."""
    wrong: list[str] = []
    for name in names:
        value = await read(name, netns)
        if value is None:
            wrong.append(f"{name} is missing")
        elif value != "1":
            wrong.append(f"{name}={value}")
    if wrong:
        fix = " ".join(f"{n}=1" for n in names)
        raise DataplaneError(
            f"{backend} dataplane needs {', '.join(wrong)} set to 1 (sysctl -w {fix})"
        )

"""`appliance health ...`: what would be checked, and one round of checks, from the config's
manifests (or --manifests). For operators: "why is node-2 drained for shop/web?".

    appliance health targets -c appliance.yaml       # the targets, no network
    appliance health check -c appliance.yaml -s 5    # check for 5 s, print each verdict
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cluster.files import FilesSource
from appliance.config import Config, ConfigError, load_config
from appliance.health.targets import Targets, derive_targets
from appliance.plan import plan

if TYPE_CHECKING:
    from appliance.health.checker import TargetStatus

EXIT_FAILED, EXIT_USAGE = 1, 2


class CommandError(Exception):
    """One line for the user; the command exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    """Add `health` to the `appliance` command's subparsers."""
    p = subparsers.add_parser("health", help="backend health checks: targets and verdicts")
    sub = p.add_subparsers(dest="health_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", "-c", dest="health_config", required=True, help="appliance.yaml")
        q.add_argument("--manifests", "-m", help="a folder of manifests (default: the config's)")
        q.add_argument("--kube-proxy-port", type=int, help="override health.kube_proxy_port")
        q.add_argument("-o", "--output", choices=("table", "json"), default="table")

    t = sub.add_parser("targets", help="print what would be checked (no network)")
    common(t)
    t.set_defaults(func=cmd_targets)
    c = sub.add_parser("check", help="run the checks for a while, then print every verdict")
    common(c)
    c.add_argument(
        "--seconds", "-s", type=float, default=0.0, help="how long (default: rise x interval + 1 s)"
    )
    c.set_defaults(func=cmd_check)


def _targets(args: argparse.Namespace) -> tuple[Config, Targets]:
    try:
        config = load_config(args.health_config)
    except ConfigError as e:
        raise CommandError(f"bad config {args.health_config}: " + "; ".join(e.errors)) from e
    folder = args.manifests or config.cluster.manifests
    if folder is None:
        raise CommandError("the config reads the Kubernetes API: pass --manifests DIR")
    port = args.kube_proxy_port
    if port is not None and not 1 <= port <= 65535:
        raise CommandError(f"--kube-proxy-port {port}: must be from 1 to 65535")
    state = FilesSource(Path(folder)).load()
    return config, derive_targets(state, plan(state, config), config.health, port)


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        code: int = func(args)
        return code
    except CommandError as e:
        print(f"appliance health: {e}", file=sys.stderr)
        return e.code


def cmd_targets(args: argparse.Namespace) -> int:
    return _run(_print_targets, args)


def _print_targets(args: argparse.Namespace) -> int:
    _, ts = _targets(args)
    for p in ts.problems:
        print(f"appliance health: {p}", file=sys.stderr)
    if args.output == "json":
        rows = [
            {
                "service": t.service,
                "node": t.node,
                "kind": t.kind,
                "endpoint": t.endpoint,
                "interval": t.interval,
                "timeout": t.timeout,
                "rise": t.rise,
                "fall": t.fall,
            }
            for t in ts.targets
        ]
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'SERVICE':<28} {'NODE':<16} {'KIND':<16} ENDPOINT")
    for t in ts.targets:
        print(f"{t.service or '(node)':<28} {t.node:<16} {t.kind:<16} {t.endpoint}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    return _run(_check, args)


def _check(args: argparse.Namespace) -> int:
    config, ts = _targets(args)
    for p in ts.problems:
        print(f"appliance health: {p}", file=sys.stderr)
    if not ts.targets:
        print("appliance health: nothing to check", file=sys.stderr)
        return 0
    seconds = args.seconds
    if seconds <= 0:
        seconds = max(t.interval * max(t.rise, t.fall) for t in ts.targets) * 1.1 + 1.0
    statuses = asyncio.run(_check_for(ts, seconds, config.health.max_in_flight))
    if args.output == "json":
        json.dump([_row(s) for s in statuses], sys.stdout, indent=2)
        print()
    else:
        print(f"{'SERVICE':<28} {'NODE':<16} {'VERDICT':<8} {'LATENCY':>9}  LAST ERROR")
        for s in statuses:
            latency = f"{s.last_latency * 1000:.1f}ms" if s.last_latency is not None else "-"
            print(
                f"{s.target.service or '(node)':<28} {s.target.node:<16} {s.verdict:<8} "
                f"{latency:>9}  {s.last_error}"
            )
    return EXIT_FAILED if any(s.verdict == "down" for s in statuses) else 0


async def _check_for(ts: Targets, seconds: float, limit: int) -> tuple[TargetStatus, ...]:
    from appliance.health.checker import HealthChecker  # and with it structlog: only to check

    checker = HealthChecker(max_in_flight=limit)
    checker.update(ts.targets)
    task = asyncio.create_task(checker.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return checker.statuses()


def _row(s: TargetStatus) -> dict[str, Any]:
    return {
        "service": s.target.service,
        "node": s.target.node,
        "endpoint": s.target.endpoint,
        "verdict": s.verdict,
        "checks": s.checks,
        "last_ok": s.last_ok,
        "last_error": s.last_error,
        "last_latency": s.last_latency,
    }

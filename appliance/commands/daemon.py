"""`appliance run --config C` (the daemon) and `appliance status [--url U]` (its overview)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from appliance.commands.common import load_or_report, web_url

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def cmd_run(args: argparse.Namespace) -> int:
    # Deferred: the daemon's modules (Flask, pyroute2, aiohttp, ~0.7 s) load for `run` only,
    # not for every command that cli.py registers.
    from appliance import logs, wiring

    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    logs.configure(args.log_level)
    return asyncio.run(wiring.serve(config, args.config))


# --- appliance status ----------------------------------------------------------------------


def fetch_state(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/state")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _ago(then: float | None, now: float) -> str:
    return "never" if not then else f"{max(0.0, now - then):.0f}s ago"


def overview(s: dict[str, Any]) -> str:
    """The page in the terminal: the same sections, in plain text."""
    now = float(s.get("now") or time.time())
    out: list[str] = []
    sync = s.get("sync")
    ready = "ready" if s.get("ready") else "NOT READY"
    out.append(f"host {s.get('host', '?')} ({ready})")
    saved = (s.get("source") or {}).get("saved_plan")
    if saved:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved["saved_at"]))
        out.append(
            f"serving the last known plan saved at {when} ({_ago(saved['saved_at'], now)}, "
            f"{saved['services']} services); the cluster source has not answered since start"
        )
    if sync:
        out.append(
            f"last sync {_ago(sync['time'], now)} in {sync['duration_seconds'] * 1000:.1f} ms: "
            f"{sync['summary']}"
        )
        out.extend(f"  error: {e}" for e in sync["errors"])
    vrrp = s.get("vrrp") or []
    if vrrp:
        out.append("VRRP:")
        out.extend(
            f"  {i['instance']} vrid {i['vrid']}: {i['state']} (master {i['master'] or '-'})"
            for i in vrrp
        )
    else:
        out.append("VRRP: none (standalone: this host owns every VIP)")
    out.append("VIPs:")
    for v in s.get("vips", []):
        owner = v["owner"]
        out.append(
            f"  {v['address']:<24} owner {owner['host']} ({owner['state']})  "
            f"pool {v['pool']}  {', '.join(v['services'])}"
        )
    out.append("Services:")
    for svc in s.get("services", []):
        out.append(
            f"  {svc['key']}  {', '.join(svc['vips'])}  policy {svc['policy']}  "
            f"affinity {svc['affinity']}  scheduler {svc['scheduler']}"
        )
        for p in svc["ports"]:
            servers = " ".join(
                f"{r['node']}={r['health']}/w{r['weight']}{_conns(r)}" for r in p["real_servers"]
            )
            out.append(
                f"    {p['protocol']} {p['vip']}:{p['port']} -> :{p['real_port']}  "
                f"{servers or 'no real servers'}"
            )
    refused, problems = s.get("refused", []), s.get("problems", [])
    if refused or problems:
        out.append("Refused and problems:")
        out.extend(f"  refused: {r}" for r in refused)
        out.extend(f"  {p}" for p in problems)
    out.append(f"DNS records: {len(s.get('records', []))}")
    events = s.get("events", [])[:10]
    if events:
        out.append("Recent events:")
        out.extend(
            f"  {time.strftime('%H:%M:%S', time.localtime(e['time']))} {e['message']}"
            for e in events
        )
    return "\n".join(out) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url
    auth: tuple[str, str] | None = None
    if args.status_config:
        config = load_or_report(args.status_config)
        if config is None:
            return EXIT_BAD_INPUT
        url = url or web_url(config.web.listen)
        if config.web.username is not None and config.web.password is not None:
            auth = (config.web.username, config.web.password)
    url = url or "http://127.0.0.1:8080"
    try:
        state = fetch_state(url, auth)
    except urllib.error.HTTPError as e:
        print(f"appliance status: {url}: HTTP {e.code} {e.reason}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(f"appliance status: {url}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        json.dump(state, sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(overview(state))
    return 0


def register(subparsers: Any) -> None:
    """Add `run` and `status` to an argparse subparsers object."""
    r = subparsers.add_parser("run", help="run the daemon (the loop, VRRP, DNS, the web)")
    r.add_argument(
        "--config", "-c", dest="config_opt", metavar="FILE", required=True, help="the config file"
    )
    r.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    r.set_defaults(func=cmd_run)
    s = subparsers.add_parser("status", help="what a running daemon is doing, from its web API")
    s.add_argument("--url", help="the daemon's web address (default: the config's, or :8080)")
    s.add_argument(
        "--config",
        "-c",
        dest="status_config",
        metavar="FILE",
        help="read web address and auth here",
    )
    s.add_argument("--json", action="store_true", help="print the raw /api/v1/state")
    s.set_defaults(func=cmd_status)


def _conns(rs: dict[str, Any]) -> str:
    """`/3c`: active connections, when the daemon has read them (an older daemon has not)."""
    n = rs.get("active_connections")
    return "" if n is None else f"/{n}c"

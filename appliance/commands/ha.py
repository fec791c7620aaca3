"""`appliance ha`: run the VRRP speaker of appliance.yaml on its own, for given VIPs;
or hand a running daemon's instances to the peer for maintenance.

The daemon runs the speaker with the VIPs its plan allocates; this command is for trying
HA alone (and for the interop tests): `appliance ha --config appliance.yaml --vip 198.18.20.100`.
SIGTERM or Ctrl-C resigns with priority 0 and removes the VIPs.

Planned handover, through the running daemon's web API (web.listen, with web.username /
password when set):

    appliance ha resign --config appliance.yaml [--instance vi-1] [--for 10m]
    appliance ha resume --config appliance.yaml [--instance vi-1]

A resigned instance sends priority 0 (the peer takes over after Skew_Time) and stays in
Fault, holding nothing, until resumed or until --for is over; a restart keeps it so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.address import PoolRanges, in_pools, parse_ip
from appliance.commands.common import EXIT_BAD_CONFIG, web_url
from appliance.config import ConfigError, load_config, parse_duration
from appliance.ha.firewall import render
from appliance.model import Vip


def register(subparsers: Any) -> None:
    """Add `ha` to the `appliance` command's subparsers."""
    p = subparsers.add_parser(
        "ha",
        help="run the VRRPv3 speaker for some VIPs (without the rest of the daemon)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("resign", "resume"),
        help="resign: hand the instances to the peer and hold them back; resume: undo",
    )
    p.add_argument("--instance", help="resign / resume: only this instance (default: all)")
    p.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="resign: resume by itself after this long (e.g. 10m; default: until resume)",
    )
    p.add_argument("--url", help="resign / resume: the daemon's web (default: from web.listen)")
    # dest config_opt: `appliance` main() turns it into args.config for every subcommand.
    p.add_argument(
        "--config", "-c", dest="config_opt", required=True, help="appliance.yaml (ha:, pools:)"
    )
    p.add_argument(
        "--vip",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a VIP to announce (repeatable); it goes to the instance owning its pool",
    )
    p.add_argument("--status-file", help="keep the speaker's status here as JSON")
    p.add_argument(
        "--release",
        action="store_true",
        help="remove every address of the pools from ha.interface and exit (the unit's"
        " ExecStopPost: a dead daemon's VIPs must not keep answering ARP)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every dropped advert")
    p.add_argument(
        "--print-firewall",
        action="store_true",
        help="print the nft script that admits VRRP only from the peers (for `nft -f -`), exit",
    )
    p.set_defaults(func=cmd_ha)


def _status_json(status: Any) -> str:
    data = asdict(status)
    data["owners"] = status.owners
    return json.dumps(data, indent=1, sort_keys=True)


def _write(path: str | None, text: str) -> None:
    if path is None:
        return
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # readers never see half a file


async def _run(args: argparse.Namespace, config: Any, vips: list[Any]) -> int:
    # Deferred here and in _release: pyroute2 (~0.2 s), which --handover and
    # --print-firewall do not need; --release in ExecStopPost races a takeover.
    from appliance.ha.link import LinkError
    from appliance.ha.speaker import Speaker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    speaker = Speaker(config.ha, pools=config.pools)
    speaker.on_change = lambda s: _write(args.status_file, _status_json(speaker.status()))
    speaker.set_vips(vips)
    try:
        await speaker.start()
    except (OSError, LinkError) as e:
        print(f"appliance ha: {e}", file=sys.stderr)
        await speaker.stop()
        return 1
    try:
        while not stop.is_set():
            _write(args.status_file, _status_json(speaker.status()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await speaker.stop()
        _write(args.status_file, _status_json(speaker.status()))
    return 0


async def _release(config: Any) -> int:
    from appliance.ha.announce import release_strays
    from appliance.ha.link import LinkError
    from appliance.ha.vmac import Vmac

    try:
        removed = await release_strays(config.ha.interface, lambda a: in_pools(a, config.pools))
    except (OSError, LinkError) as e:
        print(f"appliance ha --release: {e}", file=sys.stderr)
        return 1
    for address in removed:
        print(f"removed {address} from {config.ha.interface}")
    # A virtual MAC left up by a killed daemon would answer ARP for its VIPs: remove it.
    for instance in config.ha.instances:
        if instance.use_vmac:
            vmac = Vmac(config.ha.interface, instance.vrid)
            try:
                if await vmac.remove_leftover():
                    print(f"removed {vmac.name} (the virtual MAC of {instance.name})")
            except OSError as e:
                print(f"appliance ha --release: {e}", file=sys.stderr)
    return 0


def cmd_ha(args: argparse.Namespace) -> int:
    path = getattr(args, "config", None) or args.config_opt
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        logging.getLogger("appliance").setLevel(logging.DEBUG)
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"appliance ha: bad config {path}:", file=sys.stderr)
        for line in e.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if config.ha.interface is None or not config.ha.instances:
        print(f"appliance ha: {path}: no ha.interface or ha.instances", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.action:
        return _handover(args, config)
    if args.release:
        return asyncio.run(_release(config))
    if args.print_firewall:
        print(render(config.ha), end="")
        return 0
    vips = []
    for text in args.vip:
        address = parse_ip(text)
        if address is None:
            print(f"appliance ha: --vip {text!r}: not an IP address", file=sys.stderr)
            return EXIT_BAD_CONFIG
        pool = PoolRanges.of(config.pools).pool_of(address)
        if pool is None:
            print(f"appliance ha: --vip {text}: in no pool of {path}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        vips.append(Vip(str(address), pool.name, ()))
    return asyncio.run(_run(args, config, vips))


def _handover(args: argparse.Namespace, config: Any) -> int:
    body: dict[str, Any] = {"instance": args.instance}
    if args.action == "resign" and args.duration is not None:
        seconds = parse_duration(args.duration)
        if seconds is None or seconds <= 0:
            print(f"appliance ha resign: --for {args.duration!r}: not a duration", file=sys.stderr)
            return EXIT_BAD_CONFIG
        body["for_seconds"] = seconds
    url = (args.url or web_url(config.web.listen)).rstrip("/") + f"/api/v1/ha/{args.action}"
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    if config.web.username is not None:
        token = f"{config.web.username}:{config.web.password or ''}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        try:
            why = json.load(e).get("error", e.reason)
        except ValueError:
            why = e.reason
        print(f"appliance ha {args.action}: {url}: {why}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"appliance ha {args.action}: {url}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1
    reasons = {r["instance"]: r["reason"] for r in answer.get("resigned", [])}
    for name in answer.get("instances", []):
        if args.action == "resign":
            print(f"{name}: {reasons.get(name, 'resigned')}: the peer takes over")
        else:
            print(f"{name}: resumed: takes part in VRRP again")
    if not answer.get("instances"):
        print(f"appliance ha {args.action}: nothing to do")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ha", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""`appliance dns ...`: serve the cluster's records, or print them as a zone file.

Records come from the config's manifests through plan(), or from a JSON file (a list of
Record fields, as `appliance plan -o json` prints them under "records") for tests and
benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.cluster.files import FilesSource
from appliance.config import ConfigError, DnsConfig, load_config
from appliance.dns.zone import build_zone, next_serial, render_zonefile
from appliance.model import Record
from appliance.plan import plan

EXIT_FAILED, EXIT_USAGE = 1, 2
RECORD_FIELDS = frozenset(Record.__dataclass_fields__)


class CommandError(Exception):
    """One line for the user; the command exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    """Add `dns` to the `appliance` command's subparsers."""
    p = subparsers.add_parser("dns", help="authoritative DNS for the cluster's Services")
    sub = p.add_subparsers(dest="dns_command", required=True, metavar="ACTION")

    def sources(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", "-c", dest="dns_config", help="appliance.yaml")
        q.add_argument("--manifests", "-m", help="a folder of manifests (default: the config's)")
        q.add_argument("--records", help="a JSON list of records instead of planning")
        q.add_argument("--zone", action="append", help="a zone to serve (repeatable)")
        q.add_argument("--ttl", type=int, help="TTL of SOA and NS, and negative answers")

    s = sub.add_parser("serve", help="answer DNS queries on UDP and TCP until interrupted")
    sources(s)
    s.add_argument("--listen", action="append", help="HOST:PORT (repeatable)")
    s.add_argument("--workers", type=int, default=1, help="UDP threads per address")
    s.set_defaults(func=cmd_serve)

    z = sub.add_parser("zonefile", help="print one zone in master-file syntax")
    sources(z)
    z.add_argument("name", help="the zone (one of the configured zones)")
    z.set_defaults(func=cmd_zonefile)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise CommandError(f"--listen {text!r}: expected HOST:PORT, like 127.0.0.1:5353")
    return host, int(port)


def _read_records(path: str) -> list[Record]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CommandError(f"--records {path}: {e}") from e
    if isinstance(data, dict):
        data = data.get("records")
    if not isinstance(data, list):
        raise CommandError(f"--records {path}: expected a list of records")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not {"name", "rtype", "data"} <= item.keys():
            raise CommandError(f"--records {path}: item {i}: needs name, rtype and data")
        fields = {k: v for k, v in item.items() if k in RECORD_FIELDS}
        fields.setdefault("ttl", DnsConfig().ttl)
        for key, value in fields.items():
            wanted = str if key in ("name", "rtype", "data", "owner") else int
            if type(value) is not wanted:
                raise CommandError(
                    f"--records {path}: item {i}: {key} must be {wanted.__name__}, got {value!r}"
                )
        out.append(Record(**fields))
    return out


def _inputs(args: argparse.Namespace) -> tuple[DnsConfig, list[Record]]:
    """The DNS config and the records the arguments ask for."""
    dns = DnsConfig()
    records: list[Record] = []
    if args.dns_config:
        try:
            config = load_config(args.dns_config)
        except ConfigError as e:
            raise CommandError(f"bad config {args.dns_config}: " + "; ".join(e.errors)) from e
        dns = config.dns
        if not args.records:
            folder = args.manifests or config.cluster.manifests
            if folder is None:
                raise CommandError("the config reads the Kubernetes API: pass --manifests DIR")
            records = list(plan(FilesSource(Path(folder)).load(), config).records)
    elif not args.records:
        raise CommandError("give --config FILE or --records FILE")
    if args.records:
        records = _read_records(args.records)
    if args.zone:
        dns = replace(dns, zones=tuple(z.lower().rstrip(".") for z in args.zone))
    if args.ttl is not None:
        dns = replace(dns, ttl=args.ttl)
    if getattr(args, "listen", None):
        dns = replace(dns, listen=tuple(_listen(t) for t in args.listen))
    return dns, records


def cmd_zonefile(args: argparse.Namespace) -> int:
    try:
        dns, records = _inputs(args)
    except CommandError as e:
        print(f"appliance dns: {e}", file=sys.stderr)
        return e.code
    zone = build_zone(records, dns, next_serial(0, time.time()))
    name = args.name.lower().rstrip(".")
    if name not in {z.lower().rstrip(".") for z in dns.zones}:
        print(f"appliance dns: {name!r} is not one of the zones {dns.zones}", file=sys.stderr)
        return EXIT_USAGE
    for problem in zone.problems:
        print(f"appliance dns: {problem}", file=sys.stderr)
    sys.stdout.write(render_zonefile(zone, name))
    return 0


async def _serve(dns: DnsConfig, records: list[Record], workers: int) -> None:
    from appliance.dns.server import DnsServer  # and with it structlog: only when serving

    server = DnsServer(dns, workers=workers)
    await server.start()
    try:
        zone = await server.update(records)
        for problem in zone.problems:
            print(f"appliance dns: {problem}", file=sys.stderr)
        where = ", ".join(f"{h}:{p}" for h, p in server.addresses)
        print(
            f"appliance dns: serving {zone.record_count} records in {', '.join(dns.zones)} "
            f"on {where} (serial {zone.serial})",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        dns, records = _inputs(args)
    except CommandError as e:
        print(f"appliance dns: {e}", file=sys.stderr)
        return e.code
    try:
        asyncio.run(_serve(dns, records, args.workers))
    except OSError as e:
        print(f"appliance dns: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m appliance.commands.dns dns ...`: `appliance dns` without the rest of the CLI."""
    p = argparse.ArgumentParser(prog="appliance")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

"""`appliance apply`: program the dataplane once from a config and a folder of manifests.

    appliance apply --config C --manifests DIR [--dataplane ipvs|nftables] [--dry-run]

A dry run prints the program (the nft transaction, or ipvsadm-restore lines) and touches
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from appliance.commands.common import plan_from_args
from appliance.dataplane.backends import make_backend
from appliance.dataplane.base import DataplaneError

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def cmd_apply(args: argparse.Namespace) -> int:
    planned = plan_from_args(args)
    if planned is None:
        return EXIT_BAD_INPUT
    config, desired = planned
    backend = make_backend(config, args.dataplane)
    if args.dry_run:
        sys.stdout.write(backend.render(desired))
        return 0
    try:
        report = asyncio.run(backend.apply(desired))
    except DataplaneError as e:
        print(f"appliance apply: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        backend.close()
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(report.summary())
    return 0


def register(subparsers: Any) -> None:
    """Add `apply` to an argparse subparsers object."""
    p = subparsers.add_parser("apply", help="program the kernel dataplane once (or --dry-run)")
    p.add_argument("--config", "-c", dest="config_opt", required=True, help="the config file")
    p.add_argument("--manifests", "-m", help="a folder of manifests (default: the config's)")
    p.add_argument("--dataplane", choices=("ipvs", "nftables"), help="override the config")
    p.add_argument("--dry-run", action="store_true", help="print the program, change nothing")
    p.set_defaults(func=cmd_apply)

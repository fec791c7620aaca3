"""The `appliance` command.

Exit codes: 0 done (a plan with refused objects is still done), 1 failed at run time,
2 bad usage or a bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

from appliance.commands import apply, daemon, dns, ha, health, kube, lab
from appliance.commands.common import EXIT_BAD_CONFIG, load_or_report, plan_from_args
from appliance.render import desired_to_dict, table


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    addresses = sum(int(last) - int(first) + 1 for p in config.pools for first, last in p.ranges)
    cluster = config.cluster
    source = cluster.manifests or cluster.kubeconfig or cluster.api_server
    print(
        f"{args.config}: OK: {len(config.pools)} pool(s) with {addresses} address(es), "
        f"{len(config.ha.instances)} VRRP instance(s), dataplane {config.dataplane.backend}/"
        f"{config.dataplane.forwarding}, cluster from {source}"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    planned = plan_from_args(args)
    if planned is None:
        return EXIT_BAD_CONFIG
    _, desired = planned
    if args.output == "json":
        json.dump(desired_to_dict(desired), sys.stdout, indent=2)
        print()
    elif args.output == "yaml":
        yaml.safe_dump(desired_to_dict(desired), sys.stdout, sort_keys=False)
    else:
        sys.stdout.write(table(desired))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="A load balancer for bare-metal Kubernetes: VIPs, IPVS/nftables, VRRP, DNS.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check-config", help="validate appliance.yaml and say what it configures")
    c.add_argument("config_file", nargs="?", help="the config (or --config)")
    c.add_argument("--config", "-c", dest="config_opt", help="the config file")
    c.set_defaults(func=cmd_check_config)

    pl = sub.add_parser(
        "plan", help="print what would be programmed: VIPs, virtual services, DNS, refusals"
    )
    pl.add_argument("--config", "-c", dest="config_opt", required=False, help="the config file")
    pl.add_argument("config_file", nargs="?", help=argparse.SUPPRESS)
    pl.add_argument("--manifests", "-m", help="a folder of manifests (default: the config's)")
    pl.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    pl.set_defaults(func=cmd_plan)

    # Each subcommand module registers its own. They defer what only their command needs
    # (the daemon, pyroute2, aiohttp), so `appliance plan` and `check-config` load neither.
    for command in (daemon, apply, ha, health, dns, kube, lab):
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.config = getattr(args, "config_opt", None) or getattr(args, "config_file", None)
    if hasattr(args, "config_opt") and not args.config:
        p.error(f"{args.command}: --config FILE is required")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

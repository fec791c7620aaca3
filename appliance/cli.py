"""The `appliance` command.

Exit codes: 0 done (a plan with refused objects is still done), 1 failed at run time,
2 bad usage or a bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from appliance.config import ConfigError, load_config
from appliance.config_types import Config
from appliance.model import DesiredState

EXIT_BAD_CONFIG = 2


def load_or_report(path: str) -> Config | None:
    """The config, or None after printing every error in it to stderr."""
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"appliance: bad config {path}:", file=sys.stderr)
        for line in e.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def plan_from_args(args: argparse.Namespace) -> tuple[Config, DesiredState] | None:
    """`--config` and `--manifests` (default: the config's folder) -> (config, plan), or
    None after saying why on stderr. For the commands that act once on a folder."""
    from appliance.cluster.files import FilesSource
    from appliance.plan import plan

    config = load_or_report(args.config)
    if config is None:
        return None
    folder = args.manifests or config.cluster.manifests
    if folder is None:
        print(
            f"appliance {args.command}: the config reads the Kubernetes API; pass "
            "--manifests DIR to work from a folder of manifests",
            file=sys.stderr,
        )
        return None
    return config, plan(FilesSource(Path(folder)).load(), config)


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
    from appliance.render import desired_to_dict, table

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

    # Each part registers its own subcommand; imported lazily so `plan` starts fast.
    from appliance.daemon.command import register as register_daemon
    from appliance.dataplane.command import register as register_dataplane
    from appliance.dns.command import register as register_dns
    from appliance.ha.command import register as register_ha
    from appliance.health.command import register as register_health
    from appliance.kube.command import register as register_kube
    from appliance.lab.command import register as register_lab

    register_daemon(sub)
    register_dataplane(sub)
    register_ha(sub)
    register_health(sub)
    register_dns(sub)
    register_kube(sub)
    register_lab(sub)
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

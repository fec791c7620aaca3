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

EXIT_BAD_CONFIG = 2


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"appliance: bad config {path}:", file=sys.stderr)
        for line in e.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
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
    from appliance.cluster.files import FilesSource
    from appliance.plan import plan
    from appliance.render import desired_to_dict, table

    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    folder = args.manifests or config.cluster.manifests
    if folder is None:
        print(
            "appliance plan: the config reads the Kubernetes API; pass --manifests DIR "
            "to plan from a folder of manifests",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    state = FilesSource(Path(folder)).load()
    desired = plan(state, config)
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
    from appliance.dataplane.command import register as register_dataplane
    from appliance.dns.command import register as register_dns
    from appliance.ha.command import register as register_ha
    from appliance.kube.command import register as register_kube

    register_dataplane(sub)
    register_ha(sub)
    register_dns(sub)
    register_kube(sub)
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

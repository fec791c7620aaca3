"""What the subcommands share: the exit code for bad input, a config loaded or its every
error said on stderr, and a plan from a folder of manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.address import host_port
from appliance.config import Config, ConfigError, load_config
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
    # Deferred: ~40 ms at import that only `plan` and `apply` need, and every command
    # loads this module (`appliance ha --release` in ExecStopPost races a takeover).
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


def web_url(listen: tuple[str, int]) -> str:
    """Where a command on this host reaches the daemon's web: a wildcard listen address
    by loopback, an IPv6 one in brackets."""
    host, port = listen
    return f"http://{host_port('127.0.0.1' if host in ('0.0.0.0', '::', '') else host, port)}"

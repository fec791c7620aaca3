"""`python -m appliance.daemon run|status ...`: the same as `appliance run|status`, usable
before (or without) the main CLI; tests start the daemon this way."""

from __future__ import annotations

import argparse
import sys

from appliance.commands.daemon import register


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.daemon")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    args.config = getattr(args, "config_opt", None)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

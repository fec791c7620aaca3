"""`appliance lab up|down|status|demo`: the one-machine lab (root: it makes namespaces)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.lab import topology
from appliance.lab.demo import demo
from appliance.lab.lab import EXAMPLES, Lab


def register(subparsers: Any) -> None:
    """Add `lab` to the `appliance` command's subparsers."""
    p = subparsers.add_parser("lab", help="the one-machine lab: namespaces, nodes, LB hosts")
    p.add_argument(
        "--prefix",
        default=topology.DEFAULT_PREFIX,
        help=f"names of its namespaces and containers (default {topology.DEFAULT_PREFIX})",
    )
    sub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    up = sub.add_parser("up", help="build the network, start the nodes and the LB hosts")
    up.add_argument(
        "--lb",
        choices=("containers", "processes", "none"),
        default="containers",
        help="LB hosts as systemd containers for Ansible (default), as plain "
        "`appliance run` processes, or none",
    )
    up.add_argument("--manifests", type=Path, help="the cluster (default: examples/manifests)")
    up.add_argument(
        "--web-port",
        type=int,
        action="append",
        dest="web_ports",
        help="a port on 127.0.0.1 for lb1's page, then lb2's (default 8080 8081; 0: none)",
    )
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove everything of the lab (also after a crash)")
    down.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="what exists and runs, and which LB host is master")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    fail = sub.add_parser(
        "fail", help="an LB host goes away: its link down on the LAN, its daemon killed"
    )
    fail.add_argument("host", help="lb1 or lb2")
    fail.set_defaults(func=cmd_fail)
    heal = sub.add_parser("heal", help="the LB host comes back: link up, daemon started")
    heal.add_argument("host", help="lb1 or lb2")
    heal.set_defaults(func=cmd_heal)
    demo = sub.add_parser(
        "demo", help="`make demo`: lab up, Ansible onto lb1 and lb2, then show it working"
    )
    demo.set_defaults(func=cmd_demo)


def _as_root(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The actions that make or remove namespaces: a clear line and exit 2 without root."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        if os.geteuid() != 0:
            print("appliance lab: needs root (it makes namespaces)", file=sys.stderr)
            return 2
        return cmd(args)

    return run


@_as_root
def cmd_up(args: argparse.Namespace) -> int:

    ports = [p for p in (args.web_ports or [8080, 8081]) if p]
    lab = Lab(args.prefix)
    try:
        lab.up(lb=args.lb, manifests=args.manifests or EXAMPLES, web_ports=ports)
    except (RuntimeError, OSError) as e:
        print(f"appliance lab up: {e}", file=sys.stderr)
        return 1
    print(f"lab {args.prefix!r} up: {len(topology.existing(args.prefix))} namespaces")
    for h in topology.HOSTS:
        print(f"  {h.name:7} {h.ipv4:13} {h.ipv6:17} ip netns exec {lab.netns(h.name)} ...")
    for h, port in zip(topology.lbs(), ports, strict=False):
        print(f"  {h.name} page: http://127.0.0.1:{port}/")
    print(f"  manifests (the cluster): {lab.manifests}")
    return 0


@_as_root
def cmd_down(args: argparse.Namespace) -> int:

    removed = Lab(args.prefix).down()
    for line in removed:
        print(f"removed {line}")
    if not removed:
        print(f"no lab {args.prefix!r} here")
    return 0


def cmd_status(args: argparse.Namespace) -> int:

    lab = Lab(args.prefix)
    st = lab.status()
    if st["namespaces"] and st.get("lb") in ("containers", "processes"):
        st["master"] = lab.master()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    if not st["namespaces"] and not st["containers"]:
        print(f"no lab {args.prefix!r} here")
        return 1
    print(f"lab {args.prefix!r} (state {st['state']}), LB hosts: {st.get('lb', '?')}")
    print(f"  namespaces: {' '.join(st['namespaces'])}")
    if st["containers"]:
        print(f"  containers: {' '.join(st['containers'])}")
    for name, (pid, alive) in st["processes"].items():
        print(f"  {name:16} pid {pid:<7} {'running' if alive else 'gone'}")
    if "master" in st:
        print(f"  VRRP master: {st['master'] or 'none answers'}")
    return 0


@_as_root
def cmd_fail(args: argparse.Namespace) -> int:
    return _fault(args, "fail")


@_as_root
def cmd_heal(args: argparse.Namespace) -> int:
    return _fault(args, "heal")


def _fault(args: argparse.Namespace, action: str) -> int:

    lab = Lab(args.prefix)
    try:
        done = lab.fail(args.host) if action == "fail" else lab.heal(args.host)
    except (KeyError, RuntimeError) as e:
        print(f"appliance lab {action}: {str(e).strip(chr(39))}", file=sys.stderr)
        return 2
    for line in done:
        print(line)
    return 0


@_as_root
def cmd_demo(args: argparse.Namespace) -> int:

    return demo(args.prefix)

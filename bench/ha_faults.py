"""VIP-seconds held by nobody and by two hosts, per fault, our speaker against keepalived.

Two hosts (priority 150 and 100, 100 ms adverts) and a client on one bridge, a fresh LAN
per round. The client runs tests/support/holders.py, the observer that asks who has the
VIP every 20 ms by ARP (standard library only, nothing from `appliance`); a sample with
no reply counts 20 ms of "nobody", one with two MACs 20 ms of "two". The faults:

- `kill`: the master's speaker is SIGKILLed. Ours as under systemd: the unit's
  ExecStopPost (`appliance ha --release`) runs at once. keepalived's VRRP child is killed
  with no respawn; Debian's unit has no such step, so its VIP stays on the dead master
  and keeps answering ARP next to the new master's (the "two" figure).
- `host_loss`: the switch stops passing the master's frames (a bridge filter on its
  port; links stay up, so the host does not know) for 2 s, then passes them again.
- `partition`: the switch drops VRRP only (IP protocol 112) until both are master, then
  stops: the window is the heal. `heal_ms` is how long after the heal the client's own
  neighbour entry points at the winner again (a split brain's real damage).
- `addr_del`: `ip addr del` of the VIP on the master.
- `stranger`: a third host sends 40 adverts at priority 200 (2 s). Ours with `peers` set
  to the real peer; keepalived in multicast mode has no such filter.

Booting during an API outage needs the whole daemon and the stand-in API server; it is
tests/netns/daemon/test_daemon_boot.py (every 20 ms sample must have a holder).

Run as root: `.venv/bin/python bench/ha_faults.py [--rounds 1]`. Prints one line: per
fault `<fault>=<ours nobody>/<ours two>:<keepalived nobody>/<keepalived two>` in
VIP-seconds (medians over rounds), the heal delays, and the totals with their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "netns" / "ha"))

from ha_lan import (  # noqa: E402
    PYTHON,
    Child,
    Host,
    Keepalived,
    Lan,
    Ours,
    appliance_yaml,
    in_ns,
    instance,
    keepalived_conf,
    keepalived_state,
    lan,
    wait_for,
)

TAG = "bf"
VIP = "198.18.20.100"
SAMPLE = 0.02
OBSERVER = REPO / "tests" / "support" / "holders.py"
TABLE = "aha_fault"

STRANGER = """
import sys
from scapy.all import IP, Ether, sendp
from scapy.layers.vrrp import VRRPv3
# scapy fills the checksum over the IPv4 pseudo-header (RFC 5798), as keepalived wants it
frame = (Ether(dst="01:00:5e:00:00:12") / IP(src=sys.argv[2], dst="224.0.0.18", ttl=255)
         / VRRPv3(vrid=51, priority=200, ipcount=1, addrlist=[sys.argv[1]], adv=10))
sendp([frame] * 40, iface="eth0", inter=0.05, verbose=0)
"""


class Speakers(Protocol):
    """A pair of one implementation: h1 should be master, h2 backup."""

    h1: Host
    h2: Host

    def settled(self) -> bool: ...
    def kill_master(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class OursPair:
    h1: Host
    h2: Host
    a: Ours
    b: Ours

    def settled(self) -> bool:
        return self.a.states() == {"vi-1": "master"} and self.b.states() == {"vi-1": "backup"}

    def kill_master(self) -> None:
        self.a.child.send(signal.SIGKILL)
        self.a.child.proc.wait()
        # What systemd runs when it sees the unit's main process die (ExecStopPost).
        self.h1.run(PYTHON, "-m", "appliance.commands.ha", "--release", "--config",
                    str(self.a.config))  # fmt: skip

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


@dataclass
class KeepalivedPair:
    h1: Host
    h2: Host
    k1: Keepalived
    k2: Keepalived

    def settled(self) -> bool:
        return (
            keepalived_state(self.k1, "VI_1") == "MASTER"
            and keepalived_state(self.k2, "VI_1") == "BACKUP"
        )

    def kill_master(self) -> None:
        self.k1.kill_vrrp()

    def stop(self) -> None:
        self.k1.stop()
        self.k2.stop()


def ours(net: Lan, h1: Host, h2: Host, work: Path, peers: bool) -> OursPair:
    def config(priority: int, peer: Host) -> str:
        inst = instance(priority)
        if peers:
            inst[0]["peers"] = [peer.address4]
        return appliance_yaml(work, inst)

    a = Ours(h1, config(150, h2), work, "a", [VIP])
    b = Ours(h2, config(100, h1), work, "b", [VIP])
    return OursPair(h1, h2, a, b)


def keepalived(net: Lan, h1: Host, h2: Host, work: Path, peers: bool) -> KeepalivedPair:
    def conf(priority: int) -> str:
        return keepalived_conf(
            name="VI_1", interface="eth0", vrid=51, priority=priority, advert_int=0.1, vips=[VIP]
        )

    return KeepalivedPair(h1, h2, Keepalived(h1, conf(150), work, "k1"),
                          Keepalived(h2, conf(100), work, "k2"))  # fmt: skip


Start = Callable[[Lan, Host, Host, Path, bool], Speakers]


@dataclass
class Round:
    nobody_s: float
    two_s: float
    heal_ms: float | None = None


@contextmanager
def site(start: Start, work: Path, peers: bool = False) -> Iterator[tuple[Lan, Speakers, Host]]:
    with lan(TAG) as net:
        h1, h2 = net.add_host("h1", 1), net.add_host("h2", 2)
        client = net.add_host("cl", 9)
        pair = start(net, h1, h2, work, peers)
        try:
            wait_for("h1 master, h2 backup", pair.settled, 15)
            wait_for("the VIP on h1 alone", lambda: VIP in h1.addresses()
                     and VIP not in h2.addresses(), 5)  # fmt: skip
            # The client learns the VIP (arp_accept: from the takeover's GARPs); wait for it.
            wait_for("the client on h1's MAC", lambda: client.neighbour_mac(VIP) == h1.mac(), 5)
            yield net, pair, client
        finally:
            pair.stop()


@contextmanager
def observed(client: Host, work: Path, seconds: float) -> Iterator[list[Round]]:
    """The holders observer on the client for `seconds`; the Round is filled in at exit."""
    out = work / "holders.json"
    out.unlink(missing_ok=True)
    argv = ["/usr/bin/python3", str(OBSERVER), "--interface", "eth0", "--source",
            client.address4, "--vips", VIP, "--interval", str(SAMPLE), "--duration",
            str(seconds), "--out", str(out)]  # fmt: skip
    observer = Child(client.ns, argv, work / "holders.log")
    try:
        wait_for("the observer listening", lambda: "listening" in observer.output(), 10)
        result: list[Round] = []
        yield result
        observer.proc.wait(timeout=seconds + 30)
    finally:
        observer.stop()
    data = json.loads(out.read_text())
    if any(data["drops"].values()):
        raise SystemExit(f"the observer dropped frames {data['drops']}: figures not trustworthy")
    totals = data["totals"]
    result.append(Round(round(totals["0"] * SAMPLE, 2), round(totals["2+"] * SAMPLE, 2)))


def bridge_drop(net: Lan, *rules: str) -> None:
    """A bridge filter in the switch dropping what each rule matches (none: it goes)."""
    sw = net.bridge_ns
    if not rules:
        in_ns(sw, "nft", "delete", "table", "bridge", TABLE)
        return
    in_ns(sw, "nft", "add", "table", "bridge", TABLE)
    in_ns(sw, "nft", "add", "chain", "bridge", TABLE, "f",
          "{ type filter hook forward priority 0; }")  # fmt: skip
    for rule in rules:
        in_ns(sw, "nft", "add", "rule", "bridge", TABLE, "f", *rule.split(), "drop")


def kill(start: Start, work: Path) -> Round:
    with site(start, work) as (_net, pair, client), observed(client, work, 3.0) as r:
        time.sleep(0.5)
        pair.kill_master()
    return r[0]


def host_loss(start: Start, work: Path) -> Round:
    with site(start, work) as (net, _pair, client), observed(client, work, 5.0) as r:
        time.sleep(0.5)
        port = f"{TAG}h1"  # h1's port on the bridge (ha_lan names it so)
        bridge_drop(net, f"iifname {port}", f"oifname {port}")
        time.sleep(2.0)
        bridge_drop(net)
    return r[0]


def partition(start: Start, work: Path) -> Round:
    with site(start, work) as (net, pair, client):
        bridge_drop(net, "ip protocol 112")
        wait_for("the client on h2's MAC (h2 master too)",
                 lambda: client.neighbour_mac(VIP) == pair.h2.mac(), 5)  # fmt: skip
        with observed(client, work, 3.0) as r:
            bridge_drop(net)
            healed = time.monotonic()
            heal_ms = None
            while time.monotonic() - healed < 2.5:
                if client.neighbour_mac(VIP) == pair.h1.mac():
                    heal_ms = round((time.monotonic() - healed) * 1000)
                    break
                time.sleep(0.005)
    r[0].heal_ms = heal_ms
    return r[0]


def addr_del(start: Start, work: Path) -> Round:
    with site(start, work) as (_net, pair, client), observed(client, work, 2.5) as r:
        time.sleep(0.5)
        pair.h1.run("ip", "addr", "del", f"{VIP}/32", "dev", "eth0")
    return r[0]


def stranger(start: Start, work: Path) -> Round:
    with site(start, work, peers=True) as (net, _pair, client):
        x = net.add_host("x", 7)
        script = work / "stranger.py"
        script.write_text(STRANGER)
        with observed(client, work, 3.0) as r:
            time.sleep(0.5)
            x.run(PYTHON, str(script), VIP, x.address4)
    return r[0]


FAULTS = {
    "kill": kill,
    "host_loss": host_loss,
    "partition": partition,
    "addr_del": addr_del,
    "stranger": stranger,
}
IMPLEMENTATIONS: dict[str, Start] = {"ours": ours, "keepalived": keepalived}


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=sorted(FAULTS), action="append")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/ha_faults.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    if shutil.which("keepalived") is None:
        print("bench/ha_faults.py: keepalived is not installed", file=sys.stderr)
        return 1
    figures: list[str] = []
    totals = dict.fromkeys(IMPLEMENTATIONS, 0.0)
    for fault in args.only or list(FAULTS):
        cells: list[str] = []
        heals: list[str] = []
        for name, start in IMPLEMENTATIONS.items():
            rounds = []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="ha-faults-") as tmp:
                    rounds.append(FAULTS[fault](start, Path(tmp)))
            nobody = median([r.nobody_s for r in rounds]) or 0.0
            two = median([r.two_s for r in rounds]) or 0.0
            totals[name] += nobody + two
            cells.append(f"{nobody:.2f}/{two:.2f}")
            if fault == "partition":
                heal = median([r.heal_ms for r in rounds])
                heals.append(f"{name}_heal_ms={'never' if heal is None else round(heal)}")
        figures.append(f"{fault}={':'.join(cells)}")
        figures.extend(heals)
    ratio = totals["ours"] / totals["keepalived"] if totals["keepalived"] else float("nan")
    print(
        "bench: ha_faults vip_s=nobody/two(ours:keepalived) sample_ms=20 "
        + " ".join(figures)
        + f" ours_total_s={totals['ours']:.2f} keepalived_total_s={totals['keepalived']:.2f}"
        + f" ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

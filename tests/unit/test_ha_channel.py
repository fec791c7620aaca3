"""The daemon <-> VRRP process channel (pure codec), the VIP group the child keeps, and
the daemon's side of it (SpeakerProcess) against a stand-in child that writes down what it
is told: deltas only, the plan flag on the last chunk, the whole groups after a restart."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import HaConfig, Pool, TrackConfig, TrackInterface, VrrpInstance
from appliance.ha import channel
from appliance.ha.group import ADVERT_ADDRESSES, VipGroup, parse
from appliance.ha.process import SpeakerError, SpeakerProcess
from appliance.ha.status import HaStatus, InstanceStatus
from appliance.model import Vip

HA = HaConfig(
    interface="eth0",
    instances=(
        VrrpInstance("v4", 51, 150, 0.1, pools=("a",), peers=("198.18.20.2",)),
        VrrpInstance("v6", 52, family="IPv6", unicast_peers=("fd00:198:18:20::2",)),
    ),
    garp_count=3,
    track=TrackConfig(dataplane=0, interfaces=(TrackInterface("up0", -50),)),
)
POOLS = (
    Pool("a", ((ipaddress.ip_address("198.19.0.0"), ipaddress.ip_address("198.19.255.255")),)),
)


def test_start_round_trip() -> None:
    line = channel.encode(channel.start_message(HA, POOLS, True))
    ha, pools, wait = channel.read_start(channel.decode(line))
    assert (ha, pools, wait) == (HA, POOLS, True)


@pytest.mark.parametrize(
    "line",
    [b"nonsense\n", b"[1, 2]\n", b'{"no": "op"}\n'],
)
def test_garbage_is_refused(line: bytes) -> None:
    with pytest.raises(channel.ChannelError):
        channel.decode(line)


def test_bad_messages_are_refused() -> None:
    with pytest.raises(channel.ChannelError, match="bad start"):
        channel.read_start({"op": "start", "ha": {"instances": [{"nam": "x"}]}, "pools": []})
    with pytest.raises(channel.ChannelError, match="bad vips"):
        channel.read_vips({"op": "vips", "groups": {"v4": {"add": ["not-an-ip"]}}})


def test_deltas_go_in_chunks_and_only_the_last_says_planned() -> None:
    added = [f"198.19.{i // 256}.{i % 256}" for i in range(2500)]
    messages = list(channel.vips_messages({"v4": (added, ["198.19.200.1"])}, planned=True))
    assert len(messages) == 3
    assert [m["planned"] for m in messages] == [False, False, True]
    told: list[str] = []
    gone: list[str] = []
    for m in messages:
        groups, _ = channel.read_vips(json.loads(channel.encode(m)))
        told += groups["v4"][0]
        gone += groups["v4"][1]
    assert told == added and gone == ["198.19.200.1"]
    # Nothing changed but the plan arrived: one empty message that says so.
    assert list(channel.vips_messages({}, planned=True)) == [
        {"op": "vips", "groups": {}, "planned": True}
    ]


def test_status_round_trip_and_compact_holding() -> None:
    master = InstanceStatus(
        "v4", 51, "IPv4", "master", 1.5, "master down", "198.18.20.1", 150, 0.1, 3, 40,
        {"not_a_peer": 2}, (), (), ("198.18.20.2",),
    )  # fmt: skip
    backup = InstanceStatus(
        "v6", 52, "IPv6", "backup", 2.5, "startup", None, 100, 1.0, 9, 0, {}, (), (), ()
    )
    status = HaStatus(
        "eth0", (master, backup), {"bad_ttl": 1}, garps_sent=12, failing={"source": "gone"}
    )
    message = channel.status_message(
        status, {"v4": (True, ["198.19.0.2"]), "v6": (False, ["fd00:198:19::1"])}, "v4"
    )
    got = channel.read_status(json.loads(channel.encode(message)))
    assert (got.interface, got.dropped, got.garps_sent, got.failing) == (
        "eth0", {"bad_ttl": 1}, 12, {"source": "gone"}
    )  # fmt: skip
    reported = got.instances
    assert [r.status for r in reported] == [master, backup]
    group4 = ("198.19.0.1", "198.19.0.2", "198.19.0.3")
    assert reported[0].holding(group4) == ("198.19.0.1", "198.19.0.3")
    assert reported[1].holding(("fd00:198:19::1", "fd00:198:19::2")) == ("fd00:198:19::1",)


def test_group_keeps_address_order_under_deltas() -> None:
    g = VipGroup(["198.19.0.10", "198.19.0.9", "198.19.1.0"])
    assert list(g) == ["198.19.0.9", "198.19.0.10", "198.19.1.0"]
    added, removed = g.update(["198.19.0.1", "198.19.0.9"], ["198.19.0.10", "198.19.7.7"])
    assert (added, removed) == (["198.19.0.1"], ["198.19.0.10"])
    assert list(g) == ["198.19.0.1", "198.19.0.9", "198.19.1.0"]
    assert "198.19.0.9" in g and "198.19.0.10" not in g and "garbage" not in g
    assert g.replace(["198.19.1.0", "198.19.2.0"]) == (
        ["198.19.2.0"],
        ["198.19.0.1", "198.19.0.9"],
    )
    v6 = VipGroup(["fd00:198:19:0:0:0:0:1"])
    assert list(v6) == ["fd00:198:19::1"] and "fd00:198:19::0001" in v6


ADDRESS_TEXT = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded),
    st.integers(0, 2**32 - 1).map(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}"),
    st.text("0123456789.:abcdef /%x", max_size=24),
)


@given(ADDRESS_TEXT)
def test_parse_is_ipaddress_faster(text: str) -> None:
    """The group's own parser (inet_pton for IPv4) must key and spell every address as
    `ipaddress` does, and refuse what it refuses, with ValueError."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse(text)
        return
    assert parse(text) == (int(ip), str(ip))


def test_group_head_is_the_lowest_255() -> None:
    many = [f"198.19.{i // 256}.{i % 256}" for i in range(1000)]
    g = VipGroup(reversed(many))
    assert g.head() == tuple(many[:ADVERT_ADDRESSES])
    g.update([], [many[0]])
    assert g.head() == tuple(many[1 : ADVERT_ADDRESSES + 1])
    assert len(g) == 999


# --- SpeakerProcess against a stand-in child -----------------------------------------

STAND_IN = """\
import json, sys
log = open(sys.argv[1], "a")
for line in sys.stdin:
    m = json.loads(line)
    log.write(line)
    log.flush()
    if m["op"] == "start":
        if m["ha"]["garp_count"] == 99:
            print(json.dumps({"op": "error", "message": "no IPv4 address on eth0"}), flush=True)
            sys.exit(1)
        print(json.dumps({"op": "started"}), flush=True)
        print(json.dumps({"op": "status", "transition": "v4", "status": {
            "interface": "eth0", "dropped": {}, "garps_sent": 5, "instances": [{
                "name": "v4", "vrid": 51, "family": "IPv4", "state": "master", "since": 1.0,
                "reason": "master down", "master": "198.18.20.1", "priority": 150,
                "advert_interval": 0.1, "adverts_in": 0, "adverts_out": 1, "dropped": {},
                "peers": [], "restarts": 0, "holds_all": True, "except": []}]}}), flush=True)
    elif m["op"] == "vips" and "198.19.0.99" in json.dumps(m):
        marker = sys.argv[1] + ".died"
        try:
            open(marker, "x").close()
        except FileExistsError:
            continue
        sys.exit(3)
    elif m["op"] == "stop":
        break
"""


def _vips(*last_octets: int) -> list[Vip]:
    return [Vip(f"198.19.0.{n}", "a", ()) for n in last_octets]


def _told(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _speaker(tmp_path: Path, ha: HaConfig = HA) -> tuple[SpeakerProcess, Path]:
    script, told = tmp_path / "child.py", tmp_path / "told.jsonl"
    script.write_text(STAND_IN)
    argv = (sys.executable, str(script), str(told))
    return SpeakerProcess(ha, pools=POOLS, wait_for_plan=True, argv=argv), told


async def _settle(told: Path, count: int) -> None:
    for _ in range(200):
        if told.exists() and len(told.read_text().splitlines()) >= count:
            return
        await asyncio.sleep(0.01)


def test_the_child_is_told_deltas_and_the_plan_once(tmp_path: Path) -> None:
    async def run() -> None:
        speaker, told = _speaker(tmp_path)
        changes: list[str] = []
        speaker.on_change = lambda s: changes.append(f"{s.name}:{s.state}")
        await speaker.start()
        speaker.set_vips(_vips(3, 1, 2), planned=False)  # a saved plan: not yet planned
        speaker.set_vips(_vips(3, 1, 2))  # the first live plan, same VIPs
        speaker.set_vips(_vips(3, 1, 2))  # unchanged: nothing to say
        speaker.set_vips(_vips(1, 4))
        await _settle(told, 4)
        for _ in range(200):  # the stand-in's report reaches the reader task
            if speaker.status().instances[0].state == "master":
                break
            await asyncio.sleep(0.01)
        status = speaker.status()
        await speaker.stop()
        messages = _told(told)
        assert [m["op"] for m in messages] == ["start", "vips", "vips", "vips", "stop"]
        assert messages[1] == {
            "op": "vips",
            "groups": {"v4": {"add": ["198.19.0.1", "198.19.0.2", "198.19.0.3"], "del": []}},
            "planned": False,
        }
        assert messages[2] == {"op": "vips", "groups": {}, "planned": True}
        assert messages[3]["groups"] == {
            "v4": {"add": ["198.19.0.4"], "del": ["198.19.0.2", "198.19.0.3"]}
        }
        v4 = status.instances[0]
        assert (v4.state, v4.vips, v4.holding) == (
            "master",
            ("198.19.0.1", "198.19.0.4"),
            ("198.19.0.1", "198.19.0.4"),
        )
        assert status.garps_sent == 5 and changes == ["v4:master"]

    asyncio.run(run())


def test_a_dead_child_is_started_again_and_told_everything(tmp_path: Path) -> None:
    async def run() -> None:
        speaker, told = _speaker(tmp_path)
        await speaker.start()
        speaker.set_vips(_vips(1, 2))
        await _settle(told, 2)
        # The stand-in exits when first told about .99; the daemon starts it again.
        speaker.set_vips(_vips(1, 2, 99))
        for _ in range(300):
            await asyncio.sleep(0.01)
            if speaker.restarts:
                break
        assert speaker.restarts == 1
        await _settle(told, 5)
        await speaker.stop()
        _, again = [i for i, m in enumerate(_told(told)) if m["op"] == "start"]
        after = _told(told)[again + 1]
        assert after["planned"] is True
        assert after["groups"] == {
            "v4": {"add": ["198.19.0.1", "198.19.0.2", "198.19.0.99"], "del": []}
        }

    asyncio.run(run())


def test_a_child_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    async def run() -> None:
        speaker, _ = _speaker(tmp_path, HaConfig(interface="eth0", garp_count=99))
        with pytest.raises(SpeakerError, match="no IPv4 address on eth0"):
            await speaker.start()
        assert speaker.status().instances == ()

    asyncio.run(run())

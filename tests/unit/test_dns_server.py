"""DnsServer without sockets: zone updates, serials, counters; and the CLI's input checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from appliance.commands.dns import CommandError, _listen, _read_records
from appliance.config import DnsConfig
from appliance.dns.server import DnsServer
from appliance.dns.zone import next_serial
from appliance.model import Record

CFG = DnsConfig(zones=("cluster.local",))
A1 = Record("a.shop.svc.cluster.local", "A", "198.18.0.1", 5)
A2 = Record("a.shop.svc.cluster.local", "A", "198.18.0.2", 5)


def test_next_serial_follows_the_clock_and_always_grows() -> None:
    assert next_serial(5, 1_700_000_000.7) == 1_700_000_000
    assert next_serial(1_700_000_000, 1_700_000_000.2) == 1_700_000_001  # same second
    assert next_serial(1_800_000_000, 1_700_000_000) == 1_800_000_001  # clock went back


def test_update_rebuilds_only_on_change_and_serials_grow() -> None:
    async def run() -> list[int]:
        server = DnsServer(CFG)
        serials = [server.zone.serial]
        for records in ([A1], [A1], [A2], [A2, A1], [A1, A2]):
            serials.append((await server.update(records)).serial)
        return serials

    s = asyncio.run(run())
    assert s[1] > s[0]
    assert s[2] == s[1]  # the same records: same zone
    assert s[3] > s[2] and s[4] > s[3]
    assert s[5] == s[4]  # order does not matter


def test_concurrent_updates_apply_in_order() -> None:
    async def run() -> tuple[list[int], str]:
        server = DnsServer(CFG)
        zones = await asyncio.gather(*(server.update([rec]) for rec in (A1, A2, A1, A2)))
        last = server.zone.rrsets[(b"a", b"shop", b"svc", b"cluster", b"local")][1]
        return [z.serial for z in zones], str(last.rdatas[0])

    serials, address = asyncio.run(run())
    assert serials == sorted(serials) and len(set(serials)) == 4
    assert address == "198.18.0.2"  # the last update wins


def test_stats_before_any_query() -> None:
    async def run() -> DnsServer:
        server = DnsServer(CFG)
        await server.update([A1, Record("x.example.org", "A", "198.18.0.3", 5)])
        return server

    stats = asyncio.run(run()).stats()
    assert stats.record_count == 3 and stats.outside == 1
    assert stats.zones == ("cluster.local",)
    assert set(stats.queries) >= {"NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "dropped"}
    assert sum(stats.queries.values()) == stats.udp == stats.tcp == 0


def test_cli_listen_and_records_input_errors(tmp_path: Path) -> None:
    assert _listen("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert _listen("[::1]:53") == ("::1", 53)
    for bad in ("127.0.0.1", ":53", "host:99999", "h:x"):
        with pytest.raises(CommandError, match="expected HOST:PORT"):
            _listen(bad)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"records": [{"name": "a.cluster.local", "rtype": "A"}]}))
    with pytest.raises(CommandError, match="item 0: needs name, rtype and data"):
        _read_records(str(path))
    path.write_text(json.dumps([{"name": "a", "rtype": "A", "data": "x", "ttl": "5"}]))
    with pytest.raises(CommandError, match="item 0: ttl must be int, got '5'"):
        _read_records(str(path))
    path.write_text("{not json")
    with pytest.raises(CommandError, match=str(path)):
        _read_records(str(path))
    path.write_text(json.dumps([{"name": "a.cluster.local", "rtype": "A", "data": "198.18.0.1"}]))
    assert _read_records(str(path)) == [Record("a.cluster.local", "A", "198.18.0.1", 5)]

"""The web (page, JSON API, probes, basic auth, /metrics) and `appliance status`, on a
snapshot of a daemon that ran against in-memory adapters."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.commands.daemon import cmd_status, overview
from appliance.config import WebConfig
from appliance.daemon import snapshot
from appliance.status import Status, VirtualServiceStatus, to_json
from appliance.web.app import StateHolder, WebServer, create_app
from appliance.web.metrics import make_registry
from tests.unit.test_daemon import Rig, _with_daemon, cluster

NAME = re.compile(r"^appliance_[a-z]+_[a-z0-9_]+$")
UNITS = ("seconds", "bytes")


@pytest.fixture(scope="module")
def snap() -> Status:
    """A daemon after two syncs: echo's backend on node-1 failed its check; node-2 holds
    4 connections of every service, and they have been read."""
    rig = Rig(connections_every=0.01)
    rig.source.push(cluster())
    rig.dataplane.active = {"node-2": 4}

    async def body() -> None:
        await rig.until(lambda: len(rig.dataplane.applied) == 1, "first apply")
        rig.health.set(("shop/echo", "node-1"), False)
        await rig.until(lambda: len(rig.dataplane.applied) == 2, "re-plan")
        await rig.until(lambda: len(rig.daemon.connections) == 2, "connections read")
        rig.daemon.counters.vrrp_transitions[("vi-1", "master")] += 1
        snaps.append(snapshot.build(rig.daemon))  # while the speaker is master

    snaps: list[Status] = []
    asyncio.run(_with_daemon(rig, body))
    return snaps[0]


def client(data: Status | None, web: WebConfig | None = None) -> Any:
    holder = StateHolder()
    if data is not None:
        holder.set(data)
    registry, histogram = make_registry(holder.get)
    histogram.observe(0.004)
    return create_app(holder, registry, web).test_client()


def test_page_shows_vips_owners_services_and_the_down_backend(snap: Status) -> None:
    html = client(snap).get("/").get_data(as_text=True)
    assert 'name="viewport"' in html and 'http-equiv="refresh"' in html
    assert "lb-test" in html
    for v in to_json(snap)["vips"]:
        row = re.search(rf'<tr data-vip="{re.escape(v["address"])}">(.*?)</tr>', html, re.S)
        assert row is not None, v["address"]
        assert "lb-test" in row.group(1) and "master" in row.group(1)
    echo = re.search(r'data-service="shop/echo">(.*?)</div>\s*</div>', html, re.S)
    assert echo is not None
    assert "policy Local" in echo.group(1)
    down = re.findall(r'class="rs health-down" data-node="([^"]+)"', echo.group(1))
    assert set(down) == {"node-1"}
    # node, address, weight, then the active connections the kernel reported
    header = re.findall(r"<th[^>]*>([^<]+)</th>", echo.group(1))
    assert header[header.index("weight") + 1] == "active conns", header
    cells = dict(re.findall(
        r'data-node="([^"]+)"[^>]*>\s*<td>[^<]*</td><td[^>]*>[^<]*</td><td[^>]*>\d+</td>'
        r'\s*<td class="num conns">([^<]*)</td>', echo.group(1)))  # fmt: skip
    assert cells == {"node-1": "0", "node-2": "4"}, cells
    assert "first sync" in html  # recent events
    assert re.search(r"last sync \d\d:\d\d:\d\d", html)


def test_page_says_dash_for_connections_not_read(snap: Status) -> None:
    unread = _unread(snap)
    html = client(unread).get("/").get_data(as_text=True)
    conns = re.findall(r'<td class="num conns">([^<]*)</td>', html)
    assert conns and set(conns) == {"-"}, conns
    assert "appliance_dataplane_active_connections{" not in client(unread).get("/metrics").get_data(
        as_text=True
    )


def test_page_before_the_first_sync_says_so() -> None:
    html = client(None).get("/").get_data(as_text=True)
    assert "no sync yet" in html


def test_api_state_is_the_snapshot(snap: Status) -> None:
    r = client(snap).get("/api/v1/state")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == json.loads(json.dumps(to_json(snap)))


def test_api_state_is_encoded_once_per_status(
    snap: Status, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[Status] = []

    def counting(status: Status) -> dict[str, Any]:
        encoded.append(status)
        return to_json(status)

    monkeypatch.setattr("appliance.web.app.to_json", counting)
    holder = StateHolder()
    holder.set(snap)
    web = create_app(holder, make_registry(holder.get)[0]).test_client()
    first, again = web.get("/api/v1/state").data, web.get("/api/v1/state").data
    assert first == again and len(encoded) == 1
    newer = replace(snap, host="lb-new")
    holder.set(newer)
    assert web.get("/api/v1/state").get_json()["host"] == "lb-new"
    assert encoded == [snap, newer]


def test_readyz_follows_the_first_sync_and_healthz_a_stale_loop(snap: Status) -> None:
    assert client(None).get("/readyz").status_code == 503
    assert client(snap).get("/readyz").status_code == 200
    now = [100.0]
    holder = StateHolder(clock=lambda: now[0])
    holder.set(snap)
    app = create_app(holder, make_registry(holder.get)[0]).test_client()
    assert app.get("/healthz").status_code == 200
    now[0] += 60  # the loop stopped refreshing the snapshot
    r = app.get("/healthz")
    assert r.status_code == 503 and "stale" in r.get_data(as_text=True)


def test_basic_auth_guards_everything_but_the_probes(snap: Status) -> None:
    c = client(snap, WebConfig(username="ops", password="s3cret"))
    for path in ("/", "/api/v1/state", "/metrics"):
        r = c.get(path)
        assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    wrong = base64.b64encode(b"ops:nope").decode()
    assert c.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"ops:s3cret").decode()
    assert c.get("/api/v1/state", headers={"Authorization": f"Basic {right}"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_metrics_parse_and_follow_the_naming_convention(snap: Status) -> None:
    text = client(snap).get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families, "no metrics"
    for name, f in families.items():
        assert NAME.match(name), name
        for sample in f.samples:
            if f.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            else:
                assert "_total" not in sample.name, sample.name
    # the parser strips _total from counter family names
    expected_counters = {
        "appliance_sync_runs", "appliance_vrrp_transitions", "appliance_vrrp_garp_frames",
        "appliance_dns_queries", "appliance_health_checks", "appliance_cluster_watch_restarts",
        "appliance_config_reloads", "appliance_vrrp_adverts_dropped",
        "appliance_state_snapshot_writes",
    }  # fmt: skip
    assert {n for n, f in families.items() if f.type == "counter"} == expected_counters

    def value(name: str, **labels: str) -> float:
        for f in families.values():
            for s in f.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise AssertionError(f"no sample {name} {labels}")

    assert value("appliance_plan_vips") == len(to_json(snap)["vips"]) == 2
    assert value("appliance_plan_services") == 2
    assert value("appliance_dataplane_real_servers", health="down") == 1
    assert value("appliance_vrrp_state", instance="vi-1", state="master") == 1
    assert value("appliance_vrrp_state", instance="vi-1", state="backup") == 0
    assert value("appliance_vrrp_transitions_total", instance="vi-1", state="master") == 1
    assert value("appliance_dns_queries_total", rcode="NOERROR") == 3
    assert value("appliance_sync_runs_total", result="ok") == 2
    assert value("appliance_health_checks_total", result="failed") == 1
    assert value("appliance_health_checks_total", result="ok") == 0
    assert value("appliance_sync_duration_seconds_count") == 1
    assert families["appliance_sync_duration_seconds"].type == "histogram"
    active = {
        (x.labels["vip"], x.labels["port"], x.labels["protocol"], x.labels["real_server"]): x.value
        for x in families["appliance_dataplane_active_connections"].samples
    }
    expected = {
        (p["vip"], str(p["port"]), p["protocol"], r["address"]): (4 if r["node"] == "node-2" else 0)
        for svc in to_json(snap)["services"]
        for p in svc["ports"]
        for r in p["real_servers"]
    }
    assert active == expected and 4 in active.values()


def test_status_overview_in_the_terminal(snap: Status) -> None:
    text = overview(to_json(snap))
    assert text.startswith("host lb-test (ready)")
    for v in to_json(snap)["vips"]:
        assert re.search(rf"{re.escape(v['address'])}\s+owner lb-test \(master\)", text)
    assert "shop/echo" in text and "node-1=down" in text
    assert re.search(r"node-2=\w+/w\d+/4c", text), text


def test_status_command_reads_a_running_web(
    snap: Status, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = StateHolder()
    holder.set(snap)
    server = WebServer(create_app(holder, make_registry(holder.get)[0]), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.address[1]}"
        code = cmd_status(argparse.Namespace(url=url, status_config=None, json=False))
        out = capsys.readouterr().out
        assert code == 0 and "host lb-test (ready)" in out
        code = cmd_status(argparse.Namespace(url=url, status_config=None, json=True))
        assert code == 0 and json.loads(capsys.readouterr().out)["host"] == "lb-test"
    finally:
        server.stop()
    code = cmd_status(argparse.Namespace(url=url, status_config=None, json=False))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and url in err


def test_status_command_takes_address_and_password_from_the_config(
    snap: Status, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = StateHolder()
    holder.set(snap)
    web = WebConfig(username="ops", password="s3cret")
    server = WebServer(create_app(holder, make_registry(holder.get)[0], web), "127.0.0.1", 0)
    server.start()
    try:
        (tmp_path / "manifests").mkdir()
        config = tmp_path / "appliance.yaml"
        config.write_text(
            "cluster: {manifests: manifests}\n"
            "pools: [{name: default, addresses: [198.18.50.16/28]}]\n"
            f"web:\n  listen: 127.0.0.1:{server.address[1]}\n"
            "  basic_auth: {username: ops, password: s3cret}\n"
        )
        args = argparse.Namespace(url=None, status_config=str(config), json=False)
        assert cmd_status(args) == 0
        assert "host lb-test (ready)" in capsys.readouterr().out
        config.write_text(config.read_text().replace("s3cret", "wrong"))
        assert cmd_status(args) == 1
        assert "HTTP 401" in capsys.readouterr().err
    finally:
        server.stop()


def _with_peers(snap: Status, peers: list[str], dropped: dict[str, int]) -> Status:
    vrrp = tuple(replace(i, peers=tuple(peers), dropped=dropped) for i in snap.vrrp)
    assert vrrp, "the fixture has a VRRP instance"
    return replace(snap, vrrp=vrrp)


def _unread(snap: Status) -> Status:
    """The snapshot with no active connections read."""

    def port(p: VirtualServiceStatus) -> VirtualServiceStatus:
        servers = tuple(replace(r, active_connections=None) for r in p.real_servers)
        return replace(p, real_servers=servers)

    services = tuple(replace(svc, ports=tuple(map(port, svc.ports))) for svc in snap.services)
    return replace(snap, services=services)


def test_page_warns_that_any_host_can_demote_us_without_peers(snap: Status) -> None:
    html = client(_with_peers(snap, [], {})).get("/").get_data(as_text=True)
    assert "any host on the LAN can demote this host" in html
    html = (
        client(_with_peers(snap, ["198.18.0.2"], {"not_a_peer": 3})).get("/").get_data(as_text=True)
    )
    assert "any host on the LAN can demote this host" not in html
    assert "3 advert(s) from hosts that are not peers dropped" in html


def test_metrics_count_adverts_dropped_by_reason(snap: Status) -> None:
    data = _with_peers(snap, ["198.18.0.2"], {"not_a_peer": 3, "ttl": 1})
    text = client(data).get("/metrics").get_data(as_text=True)
    name = to_json(snap)["vrrp"][0]["instance"]
    assert (
        f'appliance_vrrp_adverts_dropped_total{{instance="{name}",reason="not_a_peer"}} 3.0' in text
    )

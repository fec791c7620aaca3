"""Planned handover: the resignations store (state file, expiry, bad requests), the loop
holding the instances back through the speaker, and the web's guarded change endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance.config import HaConfig, VrrpInstance, WebConfig
from appliance.daemon.resign import Resignations, ResignError
from appliance.web.app import StateHolder, create_app
from appliance.web.metrics import make_registry
from tests.unit.test_daemon import Rig, _with_daemon, base_config, cluster


def test_resign_survives_a_restart_and_ends_on_time(tmp_path: Path) -> None:
    r = Resignations.in_dir(str(tmp_path), ["vi-1", "vi-2"])
    assert r.resign("vi-1", 600.0, now=1000.0) == ["vi-1"]
    assert r.resign(None, None, now=1000.0) == ["vi-1", "vi-2"]  # all, until resumed
    assert r.resign("vi-1", 600.0, now=1000.0) == ["vi-1"]
    again = Resignations.in_dir(str(tmp_path), ["vi-1", "vi-2"])
    again.load()
    held = again.active(now=1500.0)
    assert set(held) == {"vi-1", "vi-2"}
    assert "until 00:26:40 UTC" in held["vi-1"] and "appliance ha resume" in held["vi-2"]
    assert set(again.active(now=1600.0)) == {"vi-2"}  # vi-1's ten minutes are over
    assert again.resume(None) == ["vi-2"]
    third = Resignations.in_dir(str(tmp_path), ["vi-1", "vi-2"])
    third.load()
    assert third.active(now=1600.0) == {}


def test_bad_requests_and_a_corrupt_file(tmp_path: Path) -> None:
    r = Resignations.in_dir(str(tmp_path), ["vi-1"])
    with pytest.raises(ResignError, match="no VRRP instance 'vi-9' \\(instances: vi-1\\)"):
        r.resign("vi-9", None, now=0.0)
    with pytest.raises(ResignError, match="at most 7 days"):
        r.resign("vi-1", -5.0, now=0.0)
    (tmp_path / "resigned.json").write_text("{not json")
    r.load()  # one line in the log, nothing resigned, no exception
    assert r.active(now=0.0) == {}
    # An instance that is no longer in the config is forgotten.
    (tmp_path / "resigned.json").write_text(
        json.dumps({"version": 1, "resigned": [{"instance": "old", "since": 0, "until": None}]})
    )
    r.load()
    assert r.active(now=0.0) == {}


def test_the_loop_holds_a_resigned_instance_back() -> None:
    ha = HaConfig(interface="eth-test", instances=(VrrpInstance("vi-1", 51),))
    rig = Rig(replace(base_config(), ha=ha), tick=0.02)
    rig.source.push(cluster())

    async def body() -> None:
        await rig.until(lambda: rig.daemon.last_sync is not None, "first sync")
        assert rig.daemon.resign(None, None) == ["vi-1"]
        assert "resigned by the operator" in rig.speaker.held_back["vi-1"]
        assert rig.daemon.resume("vi-1") == ["vi-1"]
        assert rig.speaker.held_back == {}
        with pytest.raises(ResignError):
            rig.daemon.resign("nope", None)

    asyncio.run(_with_daemon(rig, body))
    assert [j for j in rig.journal if j.startswith("speaker.hold")] == [
        "speaker.hold:vi-1",
        "speaker.hold:",
    ]


def _client(web: WebConfig | None, calls: list[tuple[str, dict[str, Any]]]) -> Any:
    def act(what: str, body: dict[str, Any]) -> dict[str, Any]:
        calls.append((what, body))
        if body.get("instance") == "bad":
            raise ResignError("no VRRP instance 'bad'")
        return {"instances": ["vi-1"], "resigned": []}

    holder = StateHolder()
    registry, _ = make_registry(holder.get)
    return create_app(holder, registry, web, act).test_client()


def test_changes_need_json_and_loopback_or_the_password() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    c = _client(None, calls)
    ok = c.post("/api/v1/ha/resign", json={"instance": None, "for_seconds": 600})
    assert ok.status_code == 200 and ok.get_json()["instances"] == ["vi-1"]
    assert c.post("/api/v1/ha/resign", data="instance=x").status_code == 415  # a form
    assert c.get("/api/v1/ha/resign").status_code == 405
    assert c.post("/api/v1/ha/reboot", json={}).status_code == 404
    bad = c.post("/api/v1/ha/resume", json={"instance": "bad"})
    assert bad.status_code == 400 and "no VRRP instance" in bad.get_json()["error"]
    far = c.post("/api/v1/ha/resign", json={}, environ_base={"REMOTE_ADDR": "198.18.0.9"})
    assert far.status_code == 403
    assert calls == [
        ("resign", {"instance": None, "for_seconds": 600}),
        ("resume", {"instance": "bad"}),
    ]
    guarded = _client(WebConfig(username="ops", password="pw"), calls)
    assert guarded.post("/api/v1/ha/resign", json={}).status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    remote = guarded.post(
        "/api/v1/ha/resign", json={}, headers=auth, environ_base={"REMOTE_ADDR": "198.18.0.9"}
    )
    assert remote.status_code == 200

"""`appliance plan` and `appliance check-config` on the example cluster, against golden files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from appliance.cli import main
from tests.golden import assert_golden

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "appliance.yaml"
GOLDEN = Path(__file__).parent / "golden" / "plan"


@pytest.mark.parametrize(("fmt", "suffix"), [("table", "txt"), ("json", "json")])
def test_plan_of_the_examples_matches_golden(fmt, suffix, capsys) -> None:
    assert main(["plan", "--config", str(EXAMPLE), "-o", fmt]) == 0
    assert_golden(GOLDEN / f"examples.{suffix}", capsys.readouterr().out)


def test_plan_yaml_is_the_same_data_as_json(capsys) -> None:
    main(["plan", "--config", str(EXAMPLE), "-o", "json"])
    as_json = json.loads(capsys.readouterr().out)
    main(["plan", "--config", str(EXAMPLE), "-o", "yaml"])
    assert yaml.safe_load(capsys.readouterr().out) == as_json


def test_plan_of_the_examples_says_what_it_refused_and_why(capsys) -> None:
    main(["plan", "--config", str(EXAMPLE), "-o", "json"])
    data = json.loads(capsys.readouterr().out)
    assert {a["service"] for a in data["allocations"]} == {"shop/web-lb", "shop/echo", "shop/dual"}
    assert [p["key"] for p in data["problems"]] == ["shop/legacy-lb"]
    reasons = {(r["name"], r["reason"]) for r in data["refused"]}
    assert ("bad-port", "spec.ports[0].port: must be 1-65535, got 70000") in reasons
    assert len(data["refused"]) == 6


def test_plan_with_another_manifests_folder(tmp_path, capsys) -> None:
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: one, namespace: x}\n"
        "spec: {type: LoadBalancer, ports: [{port: 53, protocol: UDP, nodePort: 30053}]}\n"
    )
    assert main(["plan", "-c", str(EXAMPLE), "--manifests", str(tmp_path), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["allocations"] == [
        {"service": "x/one", "addresses": ["198.18.100.0"], "pools": ["default"]}
    ]
    assert data["virtual_services"][0]["real_servers"] == []  # the folder has no nodes


def test_bad_config_exits_2_with_one_line_per_error(tmp_path, capsys) -> None:
    bad = tmp_path / "appliance.yaml"
    bad.write_text(
        "cluster: {manifests: .}\n"
        "pools:\n  - name: default\n    addresses: ['10.0.0.300/24']\n"
        "dataplane: {schedular: rr}\n"
    )
    assert main(["plan", "--config", str(bad)]) == 2
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pools[0].addresses[0]: '10.0.0.300/24' is not an IP network or range" in err
    assert "dataplane.schedular: unknown key (did you mean 'scheduler'?)" in err


def test_check_config_summarises_a_good_config(capsys) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 pool(s) with 40 address(es), 1 VRRP instance(s), dataplane auto/nat" in out


def test_the_cli_loads_no_daemon_logging_until_a_command_needs_it() -> None:
    """structlog costs a tenth of a second to import: `appliance plan` and the other
    one-shot commands must not pay it for the health checker and DNS server they skip."""
    import subprocess
    import sys

    code = (
        "import sys, appliance.cli as c; c.parser(); "
        "print(sorted(m for m in sys.modules if m == 'structlog' or m.startswith("
        "('appliance.health.checker', 'appliance.dns.server', 'appliance.logs'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_commands_reach_the_web_by_loopback_or_bracketed_ipv6() -> None:
    from appliance.commands.common import web_url

    assert web_url(("0.0.0.0", 8080)) == "http://127.0.0.1:8080"
    assert web_url(("::", 8080)) == "http://127.0.0.1:8080"
    assert web_url(("198.18.0.5", 80)) == "http://198.18.0.5:80"
    assert web_url(("fd00:198:18::5", 8080)) == "http://[fd00:198:18::5]:8080"

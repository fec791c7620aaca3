"""The speaker's pure parts and the `appliance ha` command's handling of bad input (the
sockets themselves are exercised in tests/netns/ha)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.commands import ha as command
from appliance.config import HaConfig, VrrpInstance
from appliance.ha.speaker import Speaker
from appliance.ha.status import HaStatus, InstanceStatus, instance_vips
from appliance.model import Vip

VIPS = (
    Vip("198.18.20.10", "a", ("default/web",)),
    Vip("198.18.20.9", "a", ("default/web",)),
    Vip("198.18.20.20", "b", ("default/db",)),
    Vip("fd00:198:18:20::10", "a", ("default/web",)),
)


def test_instance_vips_by_pool_and_family() -> None:
    every = VrrpInstance("all", 1)
    assert instance_vips(every, VIPS) == ("198.18.20.9", "198.18.20.10", "198.18.20.20")
    assert instance_vips(VrrpInstance("a", 2, pools=("a",)), VIPS) == (
        "198.18.20.9",
        "198.18.20.10",
    )
    assert instance_vips(VrrpInstance("b", 3, pools=("b",)), VIPS) == ("198.18.20.20",)
    assert instance_vips(VrrpInstance("v6", 1, family="IPv6"), VIPS) == ("fd00:198:18:20::10",)
    assert instance_vips(VrrpInstance("none", 4, pools=("c",)), VIPS) == ()


def test_owners() -> None:
    def inst(name: str, holding: tuple[str, ...]) -> InstanceStatus:
        return InstanceStatus(
            name, 1, "IPv4", "master", 0.0, "", None, 100, 1.0, 0, 0, {}, holding, holding
        )

    status = HaStatus("eth0", (inst("a", ("198.18.20.1",)), inst("b", ())), {})
    assert status.owners == {"198.18.20.1": "a"}


def test_speaker_needs_an_interface() -> None:
    with pytest.raises(ValueError, match=r"ha\.interface"):
        Speaker(HaConfig())


CONFIG = """\
cluster:
  manifests: {manifests}
pools:
  - name: lan
    addresses: ['198.18.20.100-198.18.20.110']
ha:
  interface: eth0
  instances:
    - name: vi-1
      vrid: 51
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    path = tmp_path / "appliance.yaml"
    path.write_text(CONFIG.format(manifests=tmp_path / "m"))
    return path


@pytest.mark.parametrize(
    ("vip", "message"),
    [
        ("not-an-ip", "--vip 'not-an-ip': not an IP address"),
        ("198.18.21.1", "--vip 198.18.21.1: in no pool of"),
    ],
)
def test_bad_vip_is_one_clear_line(
    config: Path, vip: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["--config", str(config), "--vip", vip]) == command.EXIT_BAD_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


def test_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ha:\n  instances: [{name: x, vrid: 999}]\n")
    assert command.main(["--config", str(path)]) == command.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert f"bad config {path}" in err
    assert "Traceback" not in err


def test_config_without_instances(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "appliance.yaml"
    path.write_text(CONFIG.format(manifests=tmp_path / "m").split("ha:")[0])
    assert command.main(["--config", str(path)]) == command.EXIT_BAD_CONFIG
    assert "no ha.interface or ha.instances" in capsys.readouterr().err


def test_register_adds_ha_subcommand() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ha", "-c", "x.yaml", "--vip", "198.18.20.1", "--vip", "fd00::1"])
    assert args.func is command.cmd_ha
    assert args.config_opt == "x.yaml"
    assert args.vip == ["198.18.20.1", "fd00::1"]


def test_plan_vips_group_by_instance_pools() -> None:
    """The real planner's VIPs for the examples land in the instance that owns each pool."""
    from appliance.cluster.files import FilesSource
    from appliance.config import load_config
    from appliance.plan import plan

    examples = Path(__file__).parents[2] / "examples"
    config = load_config(examples / "appliance.yaml")
    desired = plan(FilesSource(examples / "manifests").load(), config)
    assert desired.vips, "the examples allocate VIPs"
    grouped: dict[str, str] = {}
    for inst in config.ha.instances:
        for vip in instance_vips(inst, desired.vips):
            assert vip not in grouped, f"{vip} in {grouped.get(vip)} and {inst.name}"
            grouped[vip] = inst.name
    pools = {p for i in config.ha.instances for p in i.pools}
    for v in desired.vips:
        family = "IPv4" if "." in v.address else "IPv6"
        owned = any(
            i.family == family and (not i.pools or v.pool in i.pools) for i in config.ha.instances
        )
        assert (v.address in grouped) == owned, (v, pools)


def test_missing_interface_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "appliance.yaml"
    text = CONFIG.format(manifests=tmp_path / "m").replace(
        "interface: eth0", "interface: aha-none0"
    )
    path.write_text(text)
    assert command.main(["--config", str(path), "--vip", "198.18.20.100"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["appliance ha: interface aha-none0: not found"]


def test_command_prints_the_firewall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "a.yaml"
    path.write_text(CONFIG.format(manifests=tmp_path / "m") + "      peers: [198.18.20.2]\n")
    assert command.main(["--config", str(path), "--print-firewall"]) == 0
    out = capsys.readouterr().out
    assert 'iifname "eth0" meta l4proto 112 ip saddr != { 198.18.20.2 } counter drop' in out

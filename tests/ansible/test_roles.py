"""The roles without a host: lint, syntax, argument specs, and the config they would write.

Fast (no containers): ansible-lint's production profile, the playbooks' syntax against both
inventories, every role's argument specs against a table of bad values and against the
inventories' own values, and appliance.yaml rendered for the inventories' LB hosts checked
by `appliance check-config`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ansible.conftest import BIN, ROOT, run

PLAYBOOKS = Path(__file__).parent / "playbooks"
INVENTORIES = ("example", "lab")


def test_ansible_lint_production_profile() -> None:
    out = run(
        [
            str(BIN / "ansible-lint"),
            "--profile",
            "production",
            "--offline",
            "--nocolor",
            "roles",
            "playbooks",
            "inventories",
            "molecule",
        ],
        timeout=240,
    )
    assert "Profile 'production' was required, and it passed" in out, out


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_site_syntax(inventory: str) -> None:
    out = run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            f"inventories/{inventory}",
            "playbooks/site.yml",
        ]
    )
    assert "playbook: playbooks/site.yml" in out


def test_every_role_has_argument_specs_for_every_default() -> None:
    for role in ("lb_kernel", "appliance", "k8s_node"):
        specs = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
        options = specs["argument_specs"]["main"]["options"]
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text())
        assert set(options) == set(defaults), f"{role}: specs and defaults differ"
        for name, spec in options.items():
            assert name.startswith(role + "_"), f"{role}: {name} lacks the role's prefix"
            assert spec.get("description"), f"{role}: {name} undocumented"
            assert spec.get("default") == defaults[name], f"{role}: {name} default differs"


# (case, role, values, what the refusal must name); None: accepted.
CASES: list[tuple[str, str, dict[str, object], tuple[str, ...] | None]] = [
    ("kernel defaults", "lb_kernel", {"lb_kernel_ipvs": True}, None),
    (
        "scheduler typo",
        "lb_kernel",
        {"lb_kernel_ipvs_schedulers": ["rr", "wrrr"]},
        ("lb_kernel_ipvs_schedulers", "wrrr"),
    ),
    ("arp_announce 5", "lb_kernel", {"lb_kernel_arp_announce": 5}, ("lb_kernel_arp_announce",)),
    ("not a bool", "lb_kernel", {"lb_kernel_load_modules": "perhaps"}, ("lb_kernel_load_modules",)),
    (
        "backend iptables",
        "appliance",
        {"appliance_dataplane_backend": "iptables"},
        ("appliance_dataplane_backend", "iptables"),
    ),
    (
        "forwarding sideways",
        "appliance",
        {"appliance_dataplane_forwarding": "sideways"},
        ("appliance_dataplane_forwarding", "sideways"),
    ),
    (
        "scheduler unknown",
        "appliance",
        {"appliance_dataplane_scheduler": "fastest"},
        ("appliance_dataplane_scheduler", "fastest"),
    ),
    (
        "pool without name",
        "appliance",
        {"appliance_pools": [{"addresses": ["198.18.60.0/28"]}]},
        ("name", "appliance_pools"),
    ),
    (
        "pool addresses a string",
        "appliance",
        {"appliance_pools": [{"name": "p", "addresses": {"a": 1}}]},
        ("addresses",),
    ),
    (
        "vrid words",
        "appliance",
        {
            "appliance_ha_interface": "eth0",
            "appliance_ha_instances": [{"name": "vi", "vrid": "fifty-one"}],
        },
        ("vrid",),
    ),
    (
        "family IPv5",
        "appliance",
        {"appliance_ha_instances": [{"name": "vi", "vrid": 51, "family": "IPv5"}]},
        ("family",),
    ),
    ("ttl words", "appliance", {"appliance_dns_ttl": "five"}, ("appliance_dns_ttl",)),
    (
        "good appliance",
        "appliance",
        {
            "appliance_dataplane_backend": "ipvs",
            "appliance_dns_ttl": 30,
            "appliance_pools": [{"name": "p", "addresses": ["198.18.60.0/28"]}],
            "appliance_ha_instances": [{"name": "vi", "vrid": 51, "priority": 90}],
        },
        None,
    ),
    (
        "proxy userspace",
        "k8s_node",
        {"k8s_node_proxy_mode": "userspace"},
        ("k8s_node_proxy_mode", "userspace"),
    ),
    (
        "node forwarding masq",
        "k8s_node",
        {"k8s_node_forwarding": "masq"},
        ("k8s_node_forwarding", "masq"),
    ),
    (
        "good node",
        "k8s_node",
        {"k8s_node_forwarding": "tun", "k8s_node_vips": ["198.18.60.9"]},
        None,
    ),
]


def test_argument_specs_refuse_bad_values(tmp_path: Path) -> None:
    cases = [{"name": n, "role": r, "args": a} for n, r, a, _ in CASES]
    extra = {"cases": cases, "roles_dir": str(ROOT / "roles"), "out": str(tmp_path / "v.json")}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            str(PLAYBOOKS / "argspec_cases.yml"),
            "-e",
            f"@{tmp_path / 'extra.json'}",
        ]
    )
    verdicts = json.loads((tmp_path / "v.json").read_text())
    for name, _, _, names in CASES:
        verdict = verdicts[name]
        if names is None:
            assert verdict == "ok", f"{name}: refused: {verdict}"
        else:
            assert verdict != "ok", f"{name}: accepted"
            for word in names:
                assert word in verdict, f"{name}: {word!r} not in {verdict!r}"


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_values_pass_the_specs(inventory: str) -> None:
    out = run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            f"inventories/{inventory}",
            str(PLAYBOOKS / "argspec_inventory.yml"),
            "-e",
            f"roles_dir={ROOT / 'roles'}",
        ]
    )
    assert "failed=0" in out


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_config_passes_check_config(inventory: str, tmp_path: Path) -> None:
    """The appliance.yaml each LB host would get is one the daemon accepts."""
    shutil.copytree(ROOT / "examples" / "manifests", tmp_path / "manifests")
    run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            f"inventories/{inventory}",
            str(PLAYBOOKS / "render_config.yml"),
            "-e",
            f"roles_dir={ROOT / 'roles'}",
            "-e",
            f"out={tmp_path}",
            "-e",
            f"appliance_config_dir={tmp_path}",
        ]
    )
    configs = sorted(tmp_path.glob("*.yaml"))
    assert configs, "no LB host rendered"
    for config in configs:
        done = subprocess.run(
            [str(BIN / "appliance"), "check-config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (
            f"{config.name}:\n{config.read_text()}\n{done.stdout}{done.stderr}"
        )
        assert "pools" in yaml.safe_load(config.read_text())


def test_lab_inventory_matches_the_e2e_lab(tmp_path: Path) -> None:
    """`make demo` (Ansible) and tests/e2e (lb_config) run the lab's LB hosts with the same
    settings: what the e2e tests prove holds for the demo."""
    from appliance.lab.lab import lb_config
    from appliance.lab.topology import host

    run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "inventories/lab",
            str(PLAYBOOKS / "render_config.yml"),
            "-e",
            f"roles_dir={ROOT / 'roles'}",
            "-e",
            f"out={tmp_path}",
        ]
    )
    for name in ("lb1", "lb2"):
        rendered = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        direct = lb_config(host(name), tmp_path)
        assert [(p["name"], p["addresses"]) for p in rendered["pools"]] == [
            (p["name"], p["addresses"]) for p in direct["pools"]
        ]
        for section in ("ha", "dataplane", "dns", "health", "web"):
            for key, value in direct[section].items():
                got = rendered[section].get(key)
                assert got == value, f"{name}: {section}.{key} is {got!r}, e2e runs {value!r}"

"""A reboot during an API outage. The preferred LB host (the daemon, priority 150) first
runs with a working source and saves its snapshot; then it is killed, its VIP and ruleset
wiped (what a reboot leaves), and it boots while the Kubernetes API refuses every
connection. With keepalived (priority 100) alive, no master without a plan: keepalived
keeps the VIP. Alone on the LAN, the daemon serves the saved plan. Observed from outside:
`ip addr` in both hosts sampled every 20 ms, `nft list ruleset`, dig, curl."""

from __future__ import annotations

import inspect
import signal
import time
from collections.abc import Iterator

import pytest
from adm_lab import CONFIG, DNS_PORT, LB, POOL, Site, in_ns

from appliance.ha.speaker import Speaker
from tests.support.netns import why_no_netns

VIP = POOL.split("/")[0]
# The speaker's set_vips(planned=False) (VIPs of a saved plan, held at the planless
# priority) comes with the speaker process; until then the call fails and the saved plan
# reaches everything but the speaker.
SPEAKER_TAKES_PLANNED = "planned" in inspect.signature(Speaker.set_vips).parameters
BOUND = 10.0  # seconds from the start of the rebooted daemon to the VIP on its interface


def lb_vips() -> set[str]:
    out = in_ns(LB, "ip", "-4", "-o", "addr", "show", "dev", "lb0").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


def ruleset() -> str:
    return in_ns(LB, "nft", "list", "ruleset").stdout


def dig(name: str) -> list[str]:
    r = in_ns(LB, "dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "-p", str(DNS_PORT), name)
    return r.stdout.split()


@pytest.fixture(scope="module")
def boot_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    why = why_no_netns("adm-", ("ip", "nft", "curl", "dig", "keepalived"))
    if why:
        pytest.skip(why)
    s = Site(tmp_path_factory.mktemp("adm-boot"))
    try:
        s.up()
        s.start_keepalived()
        s.wait_for("keepalived master", lambda: s.keepalived_state() == "MASTER")
        s.wait_for("the VIP on keepalived's host", lambda: VIP in s.peer_vips())
        yield s
    finally:
        s.down()


def api_unreachable(s: Site) -> None:
    """The config now reads the Kubernetes API: port 9 on the LB's own loopback, where
    nothing listens (every connect is refused)."""
    token = s.workdir / "token"
    token.write_text("not-a-real-token\n")
    unreachable = CONFIG.replace(
        "  manifests: manifests\n",
        f"  api_server: https://127.0.0.1:9\n  token_file: {token}\n  write_status: false\n",
    )
    assert unreachable != CONFIG
    s.config.write_text(unreachable)


def first_life_then_reboot(s: Site) -> float:
    """The daemon with a working source (the manifests) until it is master holding the VIP
    and has saved its snapshot; then SIGKILL and the kernel state wiped. Returns when the
    first life started (wall clock)."""
    s.config.write_text(CONFIG)
    started = time.time()
    s.start_daemon()
    s.wait_for("the daemon master with the VIP", lambda: VIP in lb_vips())
    s.wait_for(
        "the snapshot saved",
        lambda: s.state()["source"]["saved_state"]["writes"].get("ok", 0) >= 1,
    )
    assert (s.workdir / "state" / "last-state.json").is_file()
    s.stop_daemon(signal.SIGKILL)
    s.wipe_lb_kernel()
    assert VIP not in lb_vips() and VIP not in ruleset()
    return started


def test_boot_during_an_api_outage_leaves_the_vip_with_the_peer(boot_site: Site) -> None:
    s = boot_site
    first_life_then_reboot(s)
    s.wait_for("keepalived master again", lambda: s.keepalived_state() == "MASTER")
    s.wait_for("the VIP back on keepalived's host", lambda: VIP in s.peer_vips())
    api_unreachable(s)
    s.start_daemon()
    try:
        s.wait_for("the daemon's page", lambda: s.get("/healthz")[0] == 200)
        # Many Master_Down_Intervals (0.36 s at 100 ms adverts): a planless host that
        # preempted would have taken the VIP away from keepalived long before the end.
        # Meanwhile it serves the saved plan everywhere but in VRRP (backups stay warm).
        samples, peer_lost, ours = 0, 0, 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            samples += 1
            peer_lost += VIP not in s.peer_vips()
            ours += VIP in lb_vips()
            time.sleep(0.02)
        assert samples > 20
        assert (peer_lost, ours) == (0, 0), s.tail()
        assert s.keepalived_state() == "MASTER"
        state = s.state()
        vrrp = state["vrrp"]
        assert [i["state"] for i in vrrp] == ["backup"], vrrp
        assert vrrp[0]["priority"] == 1, vrrp
        assert state["source"]["saved_plan"]["services"] == 1, state["source"]
        assert VIP in ruleset()
        if SPEAKER_TAKES_PLANNED:  # the speaker knows the VIP, and still does not take it
            assert state["sync"]["errors"] == [], state["sync"]
            assert vrrp[0]["vips"] == [VIP], vrrp

        # The API comes back (here: the manifests), the first sync completes, and only now
        # does the preferred host take over, at its configured priority.
        s.config.write_text(CONFIG)
        s.signal(signal.SIGHUP)
        s.wait_for("the daemon master", lambda: VIP in lb_vips())
        s.wait_for("keepalived backup", lambda: s.keepalived_state() == "BACKUP")
        s.wait_for("keepalived released the VIP", lambda: VIP not in s.peer_vips())
        state = s.state()
        assert state["vrrp"][0]["priority"] == 150
        assert state["source"]["saved_plan"] is None
    finally:
        s.stop_daemon()


@pytest.mark.skipif(
    not SPEAKER_TAKES_PLANNED,
    reason="the speaker has no set_vips(planned=...) yet (it comes with the speaker process)",
)
def test_a_reboot_alone_during_an_api_outage_serves_the_saved_plan(boot_site: Site) -> None:
    """The last test of the module: keepalived is stopped for good."""
    s = boot_site
    first_started = first_life_then_reboot(s)
    s.stop_keepalived()  # the peer is gone too
    s.wait_for("no VIP anywhere", lambda: VIP not in s.peer_vips())
    api_unreachable(s)
    t0 = time.monotonic()
    s.start_daemon()
    try:
        s.wait_for("the VIP back on the rebooted host", lambda: VIP in lb_vips(), BOUND)
        took = time.monotonic() - t0
        print(f"\nrebooted alone, API down: VIP on lb0 {took:.2f} s after the daemon started")
        rules = ruleset()
        assert VIP in rules and "30080" in rules, rules  # VIP:80 -> the nodes' NodePort
        state = s.state()
        saved = state["source"]["saved_plan"]
        assert saved is not None and saved["services"] == 1, state["source"]
        assert first_started <= saved["saved_at"] <= time.time()
        assert [(i["state"], i["priority"]) for i in state["vrrp"]] == [("master", 1)]
        assert [v["address"] for v in state["vips"]] == [VIP]
        assert state["ready"]
        assert dig("web.shop.svc.cluster.local") == [VIP]
        s.wait_for("traffic through the saved plan", lambda: curl_vip() == "node-1")
        assert "serving the last known plan saved at" in s.get("/")[1]
        kinds = {e.get("event") for e in s.log_events()}
        assert "status write-back failed" not in kinds  # nothing stale is written back
    finally:
        s.stop_daemon()


def curl_vip() -> str:
    r = in_ns(LB, "curl", "-s", "-m", "2", f"http://{VIP}:80/", check=False)
    return r.stdout.strip()

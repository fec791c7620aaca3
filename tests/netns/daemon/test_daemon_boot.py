"""Booting during an API outage. The preferred LB host (the daemon, priority 150) boots
while the Kubernetes API refuses every connection, keepalived (priority 100) holding the
VIP: no master without a plan, whether nothing was saved yet (a first boot) or the daemon
saved its snapshot in an earlier life (it then serves that plan everywhere but in VRRP).
A reboot: the daemon is SIGKILLed, its VIP and ruleset wiped. Alone on the LAN, the
rebooted daemon serves the saved plan. Observed from outside: `ip addr` in both hosts
sampled every 20 ms, `nft list ruleset`, dig, curl."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from adm_lab import CONFIG, DNS_PORT, LB, NODE, PEER_ADDRESS, POOL, Site, in_ns

from appliance.plan.snapshotfile import decode_state
from tests.support.netns import why_no_netns

VIP = POOL.split("/")[0]
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
    why = why_no_netns("adm-", ("ip", "nft", "curl", "dig", "keepalived", "tcpdump"))
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


class PeerAdverts:
    """keepalived's adverts on the LAN while the block runs (tcpdump on the bridge). A
    peer that fell silent for a Master_Down_Interval makes any host master, as VRRP
    must: the sample then says nothing about the daemon, and `check` says so."""

    def __enter__(self) -> PeerAdverts:
        self.dump = subprocess.Popen(
            ["ip", "netns", "exec", NODE, "tcpdump", "-l", "-n", "-tt", "-i", "br0",
             f"ip proto 112 and src {PEER_ADDRESS}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.dump.stderr is not None
        self.dump.stderr.readline()  # "listening on br0 ...": capturing from now on
        self.start = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.time()
        time.sleep(0.1)  # let tcpdump print what it saw
        self.dump.terminate()
        out = self.dump.communicate(timeout=5)[0]
        self.times = [float(line.split()[0]) for line in out.splitlines() if "VRRP" in line]

    def check(self, most: float = 0.36) -> None:
        edges = [self.start, *(t for t in self.times if self.start <= t <= self.end), self.end]
        gap = max(b - a for a, b in itertools.pairwise(edges))
        assert gap < most, (
            f"keepalived sent no advert for {gap:.2f} s ({len(edges) - 2} in "
            f"{self.end - self.start:.1f} s): the peer, not the daemon, is at fault"
        )


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


def saved_writes(s: Site) -> dict[str, int]:
    writes: dict[str, int] = s.state()["source"]["saved_state"]["writes"]
    return {k: n for k, n in writes.items() if k in ("ok", "skipped")}


def first_life_then_reboot(s: Site) -> float:
    """The daemon with a working source (the manifests) until it is master holding the VIP
    and has saved its snapshot; then SIGKILL and the kernel state wiped. Returns when the
    first life started (wall clock)."""
    s.config.write_text(CONFIG)
    started = time.time()
    s.start_daemon()
    s.wait_for("the daemon master with the VIP", lambda: VIP in lb_vips())
    # Written, or already on disk from an earlier life (an equal snapshot is not rewritten).
    s.wait_for("the snapshot saved", lambda: sum(saved_writes(s).values()) >= 1)
    assert (s.workdir / "state" / "last-state.json").is_file()
    s.stop_daemon(signal.SIGKILL)
    s.wipe_lb_kernel()
    assert VIP not in lb_vips() and VIP not in ruleset()
    return started


def boot_while_the_peer_holds_the_vip(s: Site, saved: bool) -> None:
    """The daemon boots with the API unreachable while keepalived holds the VIP; then the
    API comes back."""
    assert (s.workdir / "state" / "last-state.json").is_file() == saved
    api_unreachable(s)
    s.start_daemon()
    try:
        s.wait_for("the daemon's page", lambda: s.get("/healthz")[0] == 200)
        if saved:  # sample while the saved plan is served everywhere but in VRRP
            s.wait_for("the saved plan served", lambda: VIP in ruleset())
        # Many Master_Down_Intervals (0.36 s at 100 ms adverts): a planless host that
        # preempted would have taken the VIP away from keepalived long before the end.
        with PeerAdverts() as adverts:
            samples, peer_lost, ours = 0, 0, 0
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                samples += 1
                peer_lost += VIP not in s.peer_vips()
                ours += VIP in lb_vips()
                time.sleep(0.02)
        assert samples > 20
        adverts.check()
        assert (peer_lost, ours) == (0, 0), s.tail()
        assert s.keepalived_state() == "MASTER"
        state = s.state()
        vrrp = state["vrrp"]
        assert [i["state"] for i in vrrp] == ["backup"], vrrp
        assert vrrp[0]["priority"] == 1, vrrp
        if saved:  # the speaker knows the VIP (planned=False), and still does not take it
            assert state["source"]["saved_plan"]["services"] == 1, state["source"]
            assert state["sync"]["errors"] == [], state["sync"]
            assert vrrp[0]["vips"] == [VIP], vrrp
            assert VIP in ruleset()  # backups stay warm
        else:
            assert state["source"]["saved_plan"] is None

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


def test_boot_during_an_api_outage_leaves_the_vip_with_the_peer(boot_site: Site) -> None:
    """The first boot ever: nothing saved yet."""
    boot_while_the_peer_holds_the_vip(boot_site, saved=False)


def test_a_reboot_during_an_api_outage_with_a_saved_plan_leaves_the_vip_with_the_peer(
    boot_site: Site,
) -> None:
    s = boot_site
    first_life_then_reboot(s)
    s.wait_for("keepalived master again", lambda: s.keepalived_state() == "MASTER")
    s.wait_for("the VIP back on keepalived's host", lambda: VIP in s.peer_vips())
    boot_while_the_peer_holds_the_vip(s, saved=True)


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
        # The file's time: this first life's, or an earlier one's if the cluster was the
        # same (an equal snapshot is not written again).
        on_disk = decode_state((s.workdir / "state" / "last-state.json").read_bytes())
        assert saved["saved_at"] == on_disk.saved_at <= first_started + 5.0
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

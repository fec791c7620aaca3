"""No master without a plan: the preferred LB host (the daemon, priority 150) boots while
the Kubernetes API refuses every connection; keepalived (priority 100) holds the VIP.
Observed from outside: keepalived's own addresses, the daemon's, sampled every 20 ms."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from adm_lab import CONFIG, LB, POOL, Site, in_ns

from tests.support.netns import why_no_netns

VIP = POOL.split("/")[0]


def lb_vips() -> set[str]:
    out = in_ns(LB, "ip", "-4", "-o", "addr", "show", "dev", "lb0").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@pytest.fixture(scope="module")
def boot_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    why = why_no_netns("adm-", ("ip", "nft", "curl", "keepalived"))
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


def test_boot_during_an_api_outage_leaves_the_vip_with_the_peer(boot_site: Site) -> None:
    s = boot_site
    token = s.workdir / "token"
    token.write_text("not-a-real-token\n")
    # Port 9 on the LB's own loopback: nothing listens, every connect is refused.
    unreachable = CONFIG.replace(
        "  manifests: manifests\n",
        f"  api_server: https://127.0.0.1:9\n  token_file: {token}\n  write_status: false\n",
    )
    assert unreachable != CONFIG
    s.config.write_text(unreachable)
    s.start_daemon()
    try:
        s.wait_for("the daemon's page", lambda: s.get("/healthz")[0] == 200)
        # Many Master_Down_Intervals (0.36 s at 100 ms adverts): a planless host that
        # preempted would have taken the VIP away from keepalived long before the end.
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
        vrrp = s.state()["vrrp"]
        assert [i["state"] for i in vrrp] == ["backup"], vrrp
        assert vrrp[0]["priority"] == 1, vrrp

        # The API comes back (here: the manifests), the first sync completes, and only now
        # does the preferred host take over, at its configured priority.
        s.config.write_text(CONFIG)
        s.signal(signal.SIGHUP)
        s.wait_for("the daemon master", lambda: VIP in lb_vips())
        s.wait_for("keepalived backup", lambda: s.keepalived_state() == "BACKUP")
        s.wait_for("keepalived released the VIP", lambda: VIP not in s.peer_vips())
        assert s.state()["vrrp"][0]["priority"] == 150
    finally:
        s.stop_daemon()

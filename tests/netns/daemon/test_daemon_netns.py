"""`appliance run` for real in namespaces: the files source, nftables, VRRP (no peer: it
becomes master), DNS, health checks against node stand-ins, the web. The kernel, dig, curl
and `ip addr` are the observers; the tests run in order on one daemon."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

from adm_lab import DNS_PORT, LB, NODE, Site, in_ns, service_yaml
from prometheus_client.parser import text_string_to_metric_families


def vips_on_lb0() -> set[str]:
    out = in_ns(LB, "ip", "-4", "-o", "addr", "show", "dev", "lb0").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()} - {"198.18.50.1"}


def dig(name: str) -> list[str]:
    r = in_ns(LB, "dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "-p", str(DNS_PORT), name)
    return r.stdout.split()


def curl(vip: str, port: int) -> str:
    r = in_ns(LB, "curl", "-s", "-m", "2", f"http://{vip}:{port}/", check=False)
    return r.stdout.strip()


def test_first_sync_programs_kernel_vrrp_dns_and_the_api(site: Site) -> None:
    vip = site.wait_for("a VIP", lambda: site.state()["vips"])[0]["address"]
    assert vip == "198.18.50.100"
    assert vip in site.nft_elements()
    # keepalived (priority 100) on the backup host; ours (150) preempts it
    master = site.wait_for("VRRP master", lambda: site.state()["vrrp"][0]["state"] == "master")
    assert master
    site.wait_for("the VIP on lb0", lambda: vips_on_lb0() == {vip})
    site.wait_for("keepalived backup", lambda: site.keepalived_state() == "BACKUP")
    assert site.peer_vips() == set()
    assert dig("web.shop.svc.cluster.local") == [vip]
    # the page's copy is refreshed every second: wait for it to see the VIP held here
    s = site.wait_for(
        "owner on the page", lambda: (x := site.state())["vips"][0]["owner"]["here"] and x
    )
    assert s["ready"] and s["vips"][0]["owner"]["host"] == s["host"]
    assert [svc["key"] for svc in s["services"]] == ["shop/web"]


def test_traffic_follows_health_checks(site: Site) -> None:
    def node2_down() -> bool:
        web = site.state()["services"][0]
        servers = {r["node"]: r for p in web["ports"] for r in p["real_servers"]}
        return servers["node-2"]["health"] == "down" and servers["node-2"]["weight"] == 0

    site.wait_for("node-2 down (kube-proxy gone)", node2_down)
    answers = Counter(curl("198.18.50.100", 80) for _ in range(8))
    assert answers == Counter({"node-1": 8})


def test_a_manifest_edit_reaches_the_kernel(site: Site) -> None:
    before = site.nft_elements()
    assert "198.18.50.101" not in before
    path = site.manifests / "api.yaml"
    path.write_text(service_yaml("api", 8080, 30081))
    written = time.monotonic()
    site.wait_for("the new VIP in nftables", lambda: "198.18.50.101" in site.nft_elements())
    print(f"manifest write -> kernel: {(time.monotonic() - written) * 1000:.0f} ms")
    assert dig("api.shop.svc.cluster.local") == ["198.18.50.101"]
    site.wait_for("node-2 down for api", lambda: curl("198.18.50.101", 8080) == "node-1")
    path.unlink()
    site.wait_for("the VIP gone", lambda: "198.18.50.101" not in site.nft_elements())
    site.wait_for("its DNS name gone", lambda: dig("api.shop.svc.cluster.local") == [])


def test_sighup_with_a_bad_config_keeps_running_then_a_good_one_applies(site: Site) -> None:
    good = site.config.read_text()
    site.config.write_text(good.replace("addresses: [", "addresses: [not-an-address, "))
    site.signal(signal.SIGHUP)
    site.wait_for(
        "reload refused", lambda: any("reload refused" in e["event"] for e in site.log_events())
    )
    assert site.daemon is not None and site.daemon.poll() is None
    assert curl("198.18.50.100", 80) == "node-1"
    site.config.write_text(good.replace("rise: 1", "rise: 2"))
    site.signal(signal.SIGHUP)
    site.wait_for("reloaded", lambda: any(e["event"] == "reloaded" for e in site.log_events()))
    events = [e["message"] for e in site.state()["events"]]
    assert any("reload refused" in m and "not-an-address" in m for m in events)
    assert any(m.startswith("config reloaded") for m in events)
    assert site.state()["vips"][0]["address"] == "198.18.50.100"  # kept across the reload


def test_metrics_parse(site: Site) -> None:
    code, text = site.get("/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    vips = families["appliance_plan_vips"].samples[0].value
    assert vips == 1
    state = {
        s.labels["state"]: s.value
        for s in families["appliance_vrrp_state"].samples
        if s.labels["instance"] == "vi-1"
    }
    assert state["master"] == 1
    assert families["appliance_vrrp_garp_frames"].samples[0].value > 0
    checks = {s.labels["result"]: s.value for s in families["appliance_health_checks"].samples}
    assert checks["ok"] > 0 and checks["failed"] > 0  # node-1 answers, node-2 refuses
    reloads = {s.labels["result"]: s.value for s in families["appliance_config_reloads"].samples}
    assert reloads == {"ok": 1, "refused": 1}


def test_sigterm_resigns_removes_the_vip_and_exits(site: Site) -> None:
    assert vips_on_lb0() == {"198.18.50.100"}
    assert site.keepalived_state() == "BACKUP"
    # tcpdump on the LAN's bridge port of our host: what we send when we resign
    dump = subprocess.Popen(
        ["ip", "netns", "exec", NODE, "tcpdump", "-i", "p-lb", "-l", "-n", "-v", "vrrp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert dump.stderr is not None
        assert "listening on" in dump.stderr.readline()
        t0 = time.monotonic()
        code = site.stop_daemon(signal.SIGTERM)
        print(f"SIGTERM -> exit: {(time.monotonic() - t0) * 1000:.0f} ms")
        assert code == 0, site.tail()
        assert vips_on_lb0() == set()
        # the backup heard priority 0 and took over
        site.wait_for("keepalived master", lambda: site.peer_vips() == {"198.18.50.100"})
        print(f"SIGTERM -> keepalived holds the VIP: {(time.monotonic() - t0) * 1000:.0f} ms")
        assert site.keepalived_state() == "MASTER"
    finally:
        time.sleep(0.1)  # let tcpdump print what it saw
        dump.terminate()
        out, _ = dump.communicate(timeout=5)
    ours = [line for line in out.splitlines() if "198.18.50.1 >" in line]
    resigns = [line for line in ours if "prio 0," in line]
    assert len(resigns) == 1, out
    assert ours.index(resigns[0]) == len(ours) - 1  # our last advert
    assert "198.18.50.100" in site.nft_elements()  # the dataplane stays: backups are warm
    assert site.log_events()[-1]["event"] == "stopped"

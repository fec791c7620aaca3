"""The zone: planned records -> answers (RFC 1034 4.3.2, 2308, 4592, 6604), checked by
parsing our wire bytes with dnspython, an implementation independent of dnslib."""

from __future__ import annotations

import os
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from appliance.config import DnsConfig
from appliance.dns.responder import Responder
from appliance.dns.zone import build_zone, render_zonefile
from appliance.model import Record

GOLDEN = Path(__file__).parent / "golden" / "dns"
CFG = DnsConfig(zones=("cluster.local", "k8s.example.com"), ttl=7)


def rec(name: str, rtype: str, data: str, **kw: int) -> Record:
    return Record(name, rtype, data, 5, "Service shop/test", **kw)  # type: ignore[arg-type]


RECORDS = (
    rec("web.shop.svc.cluster.local", "A", "198.18.0.10"),
    rec("web.shop.svc.cluster.local", "AAAA", "fd00:198:18::10"),
    rec("_http._tcp.web.shop.svc.cluster.local", "SRV", "web.shop.svc.cluster.local", port=80),
    rec("db.shop.svc.cluster.local", "CNAME", "db.example.org"),
    rec("alias.shop.svc.cluster.local", "CNAME", "web.shop.svc.cluster.local"),
    rec("dangling.shop.svc.cluster.local", "CNAME", "gone.shop.svc.cluster.local"),
    rec("loop1.shop.svc.cluster.local", "CNAME", "loop2.shop.svc.cluster.local"),
    rec("loop2.shop.svc.cluster.local", "CNAME", "loop1.shop.svc.cluster.local"),
    rec("*.apps.k8s.example.com", "A", "198.18.0.20"),
    rec("fixed.apps.k8s.example.com", "A", "198.18.0.21"),
    rec("web.shop.svc.k8s.example.com", "A", "198.18.0.10"),
)


def ask(zone_records=RECORDS, name: str = "", rtype: str = "A", cfg: DnsConfig = CFG):
    zone = build_zone(zone_records, cfg, 42)
    query = dns.message.make_query(name, rtype, use_edns=False)
    query.flags &= ~dns.flags.RD
    reply, _ = Responder(zone).reply(query.to_wire(), udp=False)
    assert reply is not None
    return dns.message.from_wire(reply)


def rrs(section) -> list[str]:
    return sorted(str(rrset) for rrset in section)


def test_soa_and_ns_at_every_apex_with_the_configured_ttl() -> None:
    for apex in ("cluster.local", "k8s.example.com"):
        m = ask(name=apex, rtype="SOA")
        assert rrs(m.answer) == [
            f"{apex}. 7 IN SOA ns.{apex}. hostmaster.{apex}. 42 3600 600 86400 7"
        ]
        assert m.flags & dns.flags.AA
        assert rrs(ask(name=apex, rtype="NS").answer) == [f"{apex}. 7 IN NS ns.{apex}."]


def test_positive_answer_is_authoritative_with_no_authority_section() -> None:
    m = ask(name="web.shop.svc.cluster.local", rtype="A")
    assert m.rcode() == dns.rcode.NOERROR
    assert m.flags & dns.flags.AA and m.flags & dns.flags.QR
    assert rrs(m.answer) == ["web.shop.svc.cluster.local. 5 IN A 198.18.0.10"]
    assert not m.authority and not m.additional


def test_nxdomain_and_nodata_carry_the_soa() -> None:
    nx = ask(name="nope.shop.svc.cluster.local")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]
    assert nx.authority[0].ttl == 7  # RFC 2308 5: min(SOA TTL, MINIMUM)
    nodata = ask(name="web.shop.svc.k8s.example.com", rtype="AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert str(nodata.authority[0].name) == "k8s.example.com."


def test_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    for name in ("shop.svc.cluster.local", "svc.cluster.local", "apps.k8s.example.com"):
        m = ask(name=name)
        assert m.rcode() == dns.rcode.NOERROR, name
        assert not m.answer and m.authority


def test_outside_every_zone_is_refused_without_aa() -> None:
    m = ask(name="example.org")
    assert m.rcode() == dns.rcode.REFUSED
    assert not m.flags & dns.flags.AA
    assert not m.answer and not m.authority
    zone = build_zone((*RECORDS, rec("web.example.org", "A", "198.18.0.1")), CFG, 1)
    assert zone.outside == 1  # counted, not served


def test_wildcard_synthesis_rfc4592() -> None:
    m = ask(name="shop.apps.k8s.example.com")
    assert rrs(m.answer) == ["shop.apps.k8s.example.com. 5 IN A 198.18.0.20"]
    deep = ask(name="a.b.apps.k8s.example.com")  # closest encloser apps: still synthesized
    assert rrs(deep.answer) == ["a.b.apps.k8s.example.com. 5 IN A 198.18.0.20"]
    exact = ask(name="fixed.apps.k8s.example.com", rtype="AAAA")  # exists: no wildcard
    assert exact.rcode() == dns.rcode.NOERROR and not exact.answer
    below_fixed = ask(name="x.fixed.apps.k8s.example.com")  # encloser fixed: no *.fixed
    assert below_fixed.rcode() == dns.rcode.NXDOMAIN
    literal = ask(name="*.apps.k8s.example.com")
    assert rrs(literal.answer) == ["*.apps.k8s.example.com. 5 IN A 198.18.0.20"]
    star_sub = ask(name="x.*.apps.k8s.example.com")  # RFC 4592 2.2.1: no wildcard of *
    assert star_sub.rcode() == dns.rcode.NXDOMAIN
    nodata = ask(name="shop.apps.k8s.example.com", rtype="AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_cname_chains_rfc6604() -> None:
    out = ask(name="db.shop.svc.cluster.local")  # out of our zones: not chased
    assert rrs(out.answer) == ["db.shop.svc.cluster.local. 5 IN CNAME db.example.org."]
    assert out.rcode() == dns.rcode.NOERROR and not out.authority
    alias = ask(name="alias.shop.svc.cluster.local")
    assert rrs(alias.answer) == [
        "alias.shop.svc.cluster.local. 5 IN CNAME web.shop.svc.cluster.local.",
        "web.shop.svc.cluster.local. 5 IN A 198.18.0.10",
    ]
    dangling = ask(name="dangling.shop.svc.cluster.local")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # the rcode of the last name
    assert len(dangling.answer) == 1 and dangling.authority
    loop = ask(name="loop1.shop.svc.cluster.local")
    assert loop.rcode() == dns.rcode.NOERROR and len(loop.answer) == 2
    direct = ask(name="alias.shop.svc.cluster.local", rtype="CNAME")
    assert len(direct.answer) == 1


def test_srv_with_target_addresses_in_additional() -> None:
    m = ask(name="_http._tcp.web.shop.svc.cluster.local", rtype="SRV")
    assert rrs(m.answer) == [
        "_http._tcp.web.shop.svc.cluster.local. 5 IN SRV 0 0 80 web.shop.svc.cluster.local."
    ]
    assert rrs(m.additional) == [
        "web.shop.svc.cluster.local. 5 IN A 198.18.0.10",
        "web.shop.svc.cluster.local. 5 IN AAAA fd00:198:18::10",
    ]


def test_any_is_answered_minimally_rfc8482() -> None:
    m = ask(name="web.shop.svc.cluster.local", rtype="ANY")
    assert m.rcode() == dns.rcode.NOERROR
    assert len(m.answer) == 1 and len(m.answer[0]) == 1  # one RRset, not all of them


def test_bad_records_are_left_out_with_one_line_each() -> None:
    bad = (
        rec("web.shop.svc.cluster.local", "A", "not-an-ip"),
        rec("web.shop.svc.cluster.local", "A", "fd00::1"),
        rec("x" * 64 + ".cluster.local", "A", "198.18.0.1"),
        rec("srv.cluster.local", "SRV", "bad..target", port=1),
        rec("a.*.cluster.local", "A", "198.18.0.1"),
        rec("big.cluster.local", "SRV", "web.cluster.local", port=70000),
    )
    zone = build_zone((*RECORDS, *bad), CFG, 1)
    assert len(zone.problems) == len(bad)
    assert all("\n" not in p and p.startswith("Service shop/test: ") for p in zone.problems)
    assert "not-an-ip" in zone.problems[0]
    m = Responder(zone).reply(
        dns.message.make_query("web.shop.svc.cluster.local", "A", use_edns=False).to_wire()
    )[0]
    assert m is not None and rrs(dns.message.from_wire(m).answer) == [
        "web.shop.svc.cluster.local. 5 IN A 198.18.0.10"  # the good record is still served
    ]


def test_cname_beside_other_data_is_dropped_with_a_reason() -> None:
    recs = (
        rec("x.shop.svc.cluster.local", "A", "198.18.0.1"),
        rec("x.shop.svc.cluster.local", "CNAME", "y.example.org"),
    )
    zone = build_zone(recs, CFG, 1)
    assert zone.problems == ("x.shop.svc.cluster.local: CNAME beside other data, CNAME dropped",)
    assert rrs(ask(recs, "x.shop.svc.cluster.local").answer) == [
        "x.shop.svc.cluster.local. 5 IN A 198.18.0.1"
    ]


def test_duplicates_merge_and_the_rrset_takes_the_smallest_ttl() -> None:
    recs = (
        Record("a.cluster.local", "A", "198.18.0.2", 30),
        Record("a.cluster.local", "A", "198.18.0.1", 5),
        Record("a.cluster.local", "A", "198.18.0.1", 5),
    )
    zone = build_zone(recs, CFG, 1)
    assert zone.record_count == 2 + 4  # two A, SOA and NS at two apexes
    m = ask(recs, "A.Cluster.Local")
    assert rrs(m.answer) == [
        "A.Cluster.Local. 5 IN A 198.18.0.1\nA.Cluster.Local. 5 IN A 198.18.0.2"
    ]


def test_nested_zones_answer_from_the_closest() -> None:
    cfg = DnsConfig(zones=("example.com", "k8s.example.com"))
    recs = (rec("web.k8s.example.com", "A", "198.18.0.1"),)
    m = ask(recs, "nope.k8s.example.com", cfg=cfg)
    assert m.rcode() == dns.rcode.NXDOMAIN
    assert str(m.authority[0].name) == "k8s.example.com."


def test_zonefile_golden() -> None:
    zone = build_zone(RECORDS, CFG, 2026112101)
    for apex in CFG.zones:
        text = render_zonefile(zone, apex)
        path = GOLDEN / f"{apex}.zone"
        if os.environ.get("UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
        assert text == path.read_text()

"""Our IPVS netlink bytes against pyroute2's encoding of the same requests (the reference)."""

from __future__ import annotations

import pytest
from pyroute2 import IPVSDest, IPVSService  # type: ignore[import-untyped,unused-ignore]
from pyroute2.netlink.generic import ipvs  # type: ignore[import-untyped,unused-ignore]

from appliance.dataplane import ipvsnl
from appliance.dataplane.ipvsrules import IpvsDest, IpvsService

FAMILY = 0x21
CASES = [
    IpvsService("198.18.32.1", 80, "TCP", "rr"),
    IpvsService("198.18.32.2", 53, "UDP", "wrr", persistence=10800),
    IpvsService("fd00:198:18:32::1", 443, "SCTP", "mh", persistence=60),
]
DESTS = [
    IpvsDest("198.18.31.2", 30080, 1, "masq"),
    IpvsDest("198.18.31.3", 30080, 0, "droute"),
    IpvsDest("fd00:198:18:31::2", 30443, 7, "tunnel"),
]


def reference(cmd: int, svc: IpvsService, dest: IpvsDest | None, full: bool, seq: int) -> bytes:
    six = ":" in svc.vip
    s = IPVSService(
        addr=svc.vip,
        port=svc.port,
        protocol=ipvsnl.PROTO[svc.protocol],
        sched_name=svc.scheduler,
        timeout=svc.persistence,
        flags={"flags": 1 if svc.persistence else 0, "mask": 0xFFFFFFFF},
        netmask="128.0.0.0" if six else "255.255.255.255",
    )
    msg = ipvs.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    # pyroute2's dest() sends the service key only, as the kernel needs
    service = s.dump_nla() if full and dest is None else s.dump_key()
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", service)]
    if dest is not None:
        d = IPVSDest(
            addr=dest.address,
            port=dest.port,
            weight=dest.weight,
            fwd_method=ipvsnl.FWD_METHOD[dest.fwd],
        )
        nla = d.dump_nla()  # also fills in addr_family
        if not full:  # what pyroute2 sends for a delete: the real server's key
            keys = ("addr", "addr_family", "port")
            nla = d.dump_nla(items=[(k, v) for k, v in d.items() if k in keys])
        msg["attrs"].append(("IPVS_CMD_ATTR_DEST", nla))
    msg["header"]["type"] = FAMILY
    msg["header"]["flags"] = ipvsnl.NLM_F_REQUEST | ipvsnl.NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("svc", CASES)
def test_service_messages_match_pyroute2(svc: IpvsService) -> None:
    for op, cmd, full in (
        (ipvsnl.add_service(svc), ipvsnl.NEW_SERVICE, True),
        (ipvsnl.set_service(svc), ipvsnl.SET_SERVICE, True),
        (ipvsnl.del_service(svc), ipvsnl.DEL_SERVICE, False),
    ):
        ours = ipvsnl.message(FAMILY, op.cmd, op.payload, 9)
        assert ours == reference(cmd, svc, None, full, 9), op


@pytest.mark.parametrize("dest", DESTS)
def test_dest_messages_match_pyroute2(dest: IpvsDest) -> None:
    svc = CASES[2] if ":" in dest.address else CASES[0]
    for op, cmd, full in (
        (ipvsnl.add_dest(svc, dest), ipvsnl.NEW_DEST, True),
        (ipvsnl.set_dest(svc, dest), ipvsnl.SET_DEST, True),
        (ipvsnl.del_dest(svc, dest), ipvsnl.DEL_DEST, False),
    ):
        ours = ipvsnl.message(FAMILY, op.cmd, op.payload, 3)
        ref = reference(cmd, svc, dest, full, 3)
        assert ours == ref, (op, ours.hex(), ref.hex())


def test_refusal_names_the_change() -> None:
    op = ipvsnl.add_dest(CASES[0], DESTS[0])
    text = ipvsnl.describe([(op, 17), (op, 17)])
    assert text == (
        "IPVS refused `-a -t 198.18.32.1:80 -r 198.18.31.2:30080 -m -w 1`: File exists (and 1 more)"
    )
    assert (
        str(ipvsnl.del_service(CASES[2]))
        == "-D --sctp-service [fd00:198:18:32::1]:443 -s mh -p 60 -M 128"
    )

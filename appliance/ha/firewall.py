"""The LB host's VRRP filter: an nftables table of its own that admits VRRP (protocol 112)
on the HA interface only from the configured peers (pure: renders text, no I/O).

A family gets a rule only when every instance of that family lists peers: an instance
without peers accepts any host (RFC 5798), and a filter would cut it off. The speaker's
own check (`vrrp.from_peer`, counted as not_a_peer) stays: the filter is the outer wall,
the speaker the inner one. Load with `nft -f -`; the first two lines make it replace
an earlier version of the table atomically.
"""

from __future__ import annotations

import ipaddress

from appliance.config import HaConfig
from appliance.ha.vrrp import PROTO_VRRP

TABLE = "appliance_vrrp"
RULE_MARK = "not a peer"  # in the comment of every drop rule


def family_peers(ha: HaConfig, family: str) -> tuple[str, ...] | None:
    """The union of the peers of `family`'s instances; None when one of them has none."""
    instances = [i for i in ha.instances if i.family == family]
    if not instances or any(not i.accepted_peers for i in instances):
        return None
    peers = {p for i in instances for p in i.accepted_peers}
    return tuple(sorted(peers, key=lambda a: int(ipaddress.ip_address(a))))


def render(ha: HaConfig) -> str:
    """The nft script for our VRRP filter table (empty chain when nothing is filtered)."""
    rules: list[str] = []
    for family, match in (("IPv4", "ip saddr"), ("IPv6", "ip6 saddr")):
        peers = family_peers(ha, family)
        if peers is None or ha.interface is None:
            continue
        rules.append(  # l4proto: the protocol after any IPv6 extension headers
            f'iifname "{ha.interface}" meta l4proto {PROTO_VRRP}'
            f" {match} != {{ {', '.join(peers)} }}"
            f' counter drop comment "VRRP from a host that is {RULE_MARK}"'
        )
    lines = [
        f"add table inet {TABLE}",
        f"delete table inet {TABLE}",
        f'add table inet {TABLE} {{ comment "managed by appliance; do not edit"; }}',
        f"add chain inet {TABLE} input"
        " { type filter hook input priority filter - 10; policy accept; }",
        *(f"add rule inet {TABLE} input {r}" for r in rules),
    ]
    return "\n".join(lines) + "\n"

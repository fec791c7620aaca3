"""The allocations state file codec: round trip, canonical bytes, one-line refusals. No I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.model import Allocation
from appliance.plan.statefile import StateFileError, decode_allocations, encode_allocations

WEB = Allocation("shop/web", ("198.18.50.16", "fd00:198:18::10"), ("default", "v6"), None)
DNS = Allocation("kube-system/dns", ("198.18.50.17",), ("default",), "dns")


def test_round_trip_and_canonical_bytes() -> None:
    data = encode_allocations({"shop/web": WEB, "kube-system/dns": DNS})
    assert decode_allocations(data) == {"shop/web": WEB, "kube-system/dns": DNS}
    assert data == encode_allocations({"kube-system/dns": DNS, "shop/web": WEB})  # order-free
    assert data.endswith(b"\n")
    assert decode_allocations(encode_allocations({})) == {}


_octet = st.integers(0, 255)
_ipv4 = st.builds(lambda a, b: f"198.18.{a}.{b}", _octet, _octet)
_name = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)


@given(
    st.dictionaries(
        st.builds(lambda ns, n: f"{ns}/{n}", _name, _name),
        st.tuples(st.lists(st.tuples(_ipv4, _name), min_size=1, max_size=2), st.none() | _name),
        max_size=20,
    )
)
def test_any_allocations_survive_the_round_trip(
    raw: dict[str, tuple[list[tuple[str, str]], str | None]],
) -> None:
    allocs = {
        k: Allocation(k, tuple(a for a, _ in pairs), tuple(p for _, p in pairs), shared)
        for k, (pairs, shared) in raw.items()
    }
    assert decode_allocations(encode_allocations(allocs)) == allocs


def _doc(entry: object) -> bytes:
    return json.dumps({"version": 1, "allocations": {"shop/web": entry}}).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON: line 1 column 1: Expecting value"),
        (b'{"version": 1, "allocations": {', "not JSON: line 1 column 32: "),
        (b"\xff\xfe", "not UTF-8 (byte 0)"),
        (b"[]", "must be a JSON object, got list"),
        (b'{"allocations": {}}', "version None is not supported (this daemon reads 1)"),
        (b'{"version": 2, "allocations": {}}', "version 2 is not supported"),
        (b'{"version": 1, "allocations": []}', "allocations: must be an object"),
        (b'{"version": 1, "allocations": {"web": {}}}', "'web' is not a Service key"),
        (_doc([]), "allocations['shop/web']: must be an object"),
        (_doc({"addresses": ["198.18.50.16"], "pools": ["default"], "vip": 1}),
         "unknown field 'vip'"),
        (_doc({"addresses": "198.18.50.16", "pools": ["default"]}),
         "allocations['shop/web'].addresses: must be a list of strings"),
        (_doc({"addresses": ["198.18.50.16"], "pools": []}),
         "needs one pool per address, got 1 address(es) and 0 pool(s)"),
        (_doc({"addresses": [], "pools": []}), "needs one pool per address"),
        (_doc({"addresses": ["198.18.50.300"], "pools": ["default"]}),
         "'198.18.50.300' is not an IP address"),
        (_doc({"addresses": ["FD00::1"], "pools": ["default"]}), "is not canonical (fd00::1)"),
        (_doc({"addresses": ["198.18.50.16"], "pools": ["default"], "shared_key": 3}),
         "shared_key: must be a string or null"),
        (b"[" * 100_000, "not JSON"),
    ],
)  # fmt: skip
def test_a_corrupt_file_is_refused_with_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(StateFileError) as e:
        decode_allocations(data)
    message = str(e.value)
    assert reason in message
    assert "\n" not in message

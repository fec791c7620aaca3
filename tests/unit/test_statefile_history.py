"""Random histories of add / delete / restart (a restart is a new Planner seeded from the
state file's bytes only): a surviving Service's VIP never moves, and how often a host
restarted does not change what it ends up with."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.model import Allocation
from appliance.plan import Planner
from appliance.plan.statefile import decode_allocations, encode_allocations
from tests.unit.builders import config, lb, pool, state

NAMES = [f"s{i}" for i in range(10)]
CFG = config(pool("default", "198.18.100.0/29"))  # 8 addresses for 10 names: some run out

_op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NAMES), st.integers(0, 59) | st.none()),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("restart"), st.just(""), st.none()),
)


def _service(name: str, age: int | None) -> object:
    # None: a hand-written manifest without creationTimestamp (the files source)
    return lb(name, age=age or 0) if age is not None else lb(name, creation_timestamp="")


def _run(ops: list[tuple[str, str, int | None]], restarts: bool) -> list[dict[str, Allocation]]:
    """The allocations after each step; with `restarts` false, restart steps are ignored."""
    services: dict[str, object] = {}
    planner = Planner(CFG)
    file = encode_allocations({})
    out: list[dict[str, Allocation]] = []
    for op, name, age in ops:
        if op == "add" and name not in services:
            services[name] = _service(name, age)
        elif op == "delete":
            services.pop(name, None)
        elif op == "restart" and restarts:
            planner = Planner(CFG, previous=decode_allocations(file))  # the file, nothing else
        desired = planner.plan(state(*services.values()))  # type: ignore[arg-type]
        file = encode_allocations(desired.allocations)
        out.append(dict(desired.allocations))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_a_surviving_services_vip_never_moves(ops: list[tuple[str, str, int | None]]) -> None:
    steps = _run(ops, restarts=True)
    for before, after in pairwise(steps):
        for key, alloc in before.items():
            if key in after:
                assert after[key].addresses == alloc.addresses, (key, ops)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=40))
def test_restarts_do_not_change_where_a_host_ends_up(
    ops: list[tuple[str, str, int | None]],
) -> None:
    # Two hosts that saw the same Services, one restarted and one never: the same VIPs.
    assert _run(ops, restarts=True) == _run(ops, restarts=False)

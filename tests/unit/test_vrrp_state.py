"""The VRRPv3 state machine (RFC 5798 6.4) on a fake clock: every transition, timers to
the centisecond."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.ha.track import effective
from appliance.ha.virtual_router import (
    Action,
    Announce,
    RouterSettings,
    Send,
    Transition,
    VirtualRouter,
)
from appliance.ha.vrrp import Advert

A, B, C = "198.18.20.1", "198.18.20.2", "198.18.20.3"
CS = 0.005  # half a centisecond: timers must land on the right centisecond


def router(
    priority: int = 100, interval_cs: int = 100, address: str = A, **kw: object
) -> VirtualRouter:
    return VirtualRouter(RouterSettings(1, priority, interval_cs, address, **kw))  # type: ignore[arg-type]


def advert(priority: int, interval_cs: int = 100, vrid: int = 1) -> Advert:
    return Advert(vrid, priority, interval_cs, ("198.18.20.100",))


def test_startup_goes_backup_with_master_down_interval() -> None:
    r = router(priority=100, interval_cs=100)
    assert r.start(10.0) == [Transition("initialize", "backup", "startup")]
    # Skew = (256-100)*100/256 cs = 60.94 cs; Master_Down = 3*100 + 60.94 cs.
    assert r.skew_time == pytest.approx(0.609375)
    assert r.deadline == pytest.approx(10.0 + 3.609375, abs=CS)
    assert r.state == "backup"
    assert r.since == 10.0
    assert r.start(11.0) == []  # only from Initialize


def test_skew_depends_on_priority() -> None:
    assert router(priority=254).skew_time == pytest.approx(2 / 256)
    assert router(priority=1, interval_cs=10).master_down_interval == pytest.approx(
        0.3 + 255 * 10 / 256 / 100
    )


def test_master_down_timer_makes_master() -> None:
    r = router(interval_cs=10)
    r.start(0.0)
    deadline = r.deadline
    assert deadline is not None
    assert r.expire(deadline - 0.001) == []
    assert r.state == "backup"
    actions = r.expire(deadline)
    assert actions == [Send(100), Transition("backup", "master", "master down")]
    assert r.master_address == A
    assert r.deadline == pytest.approx(deadline + 0.10, abs=CS)


def test_master_sends_every_interval_and_keeps_cadence() -> None:
    r = router(priority=255, interval_cs=10)
    assert r.start(0.0) == [Send(255), Transition("initialize", "master", "address owner")]
    assert r.deadline == pytest.approx(0.10, abs=CS)
    assert r.expire(0.103) == [Send(255)]
    assert r.deadline == pytest.approx(0.20, abs=CS)  # not 0.203: cadence kept
    assert r.expire(0.9) == [Send(255)]  # a long stall restarts from now
    assert r.deadline == pytest.approx(1.0, abs=CS)


def test_backup_adopts_master_interval() -> None:
    r = router(priority=100, interval_cs=100)
    r.start(0.0)
    assert r.receive(advert(200, interval_cs=50), B, 1.0) == []
    assert r.master_interval_cs == 50
    assert r.master_address == B
    assert r.deadline == pytest.approx(1.0 + 1.5 + 156 * 50 / 256 / 100, abs=CS)


def test_backup_equal_priority_resets_timer() -> None:
    r = router(priority=100)
    r.start(0.0)
    r.receive(advert(100), B, 2.0)
    assert r.deadline == pytest.approx(2.0 + 3.609375, abs=CS)


def test_backup_preempts_lower_priority_master() -> None:
    r = router(priority=150, interval_cs=10)
    r.start(0.0)
    first = r.deadline
    r.receive(advert(100, interval_cs=10), B, 0.05)
    assert r.deadline == first  # discarded: the timer keeps running
    assert r.master_address is None
    assert r.expire(first or 0) == [Send(150), Transition("backup", "master", "master down")]


def test_nopreempt_backup_follows_lower_priority_master() -> None:
    r = router(priority=150, interval_cs=10, preempt=False)
    r.start(0.0)
    r.receive(advert(100, interval_cs=10), B, 0.25)
    assert r.master_address == B
    assert r.deadline == pytest.approx(0.25 + 0.30 + 106 * 10 / 256 / 100, abs=CS)


def test_preempt_delay_holds_off_preemption() -> None:
    r = router(priority=150, interval_cs=10, preempt_delay=1.0)
    r.start(0.0)
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        r.receive(advert(100, interval_cs=10), B, t)
        assert r.state == "backup"
        assert r.expire(t) == []
    assert r.deadline == pytest.approx(0.9 + 0.3 + 106 * 10 / 256 / 100, abs=CS)
    r.receive(advert(100, interval_cs=10), B, 1.0)  # delay over: discarded
    assert r.deadline == pytest.approx(0.9 + 0.3 + 106 * 10 / 256 / 100, abs=CS)
    assert r.expire(1.25)[-1] == Transition("backup", "master", "master down")


def test_priority_zero_backup_takes_over_after_skew() -> None:
    r = router(priority=100, interval_cs=100)
    r.start(0.0)
    r.receive(advert(200), B, 1.0)
    assert r.receive(advert(0), B, 2.0) == []
    assert r.master_address is None
    assert r.deadline == pytest.approx(2.0 + 0.609375, abs=CS)
    assert r.expire(2.60) == []
    assert r.expire(2.61)[-1] == Transition("backup", "master", "master resigned (priority 0)")
    assert r.reason == "master resigned (priority 0)"


def test_advert_after_priority_zero_cancels_resignation() -> None:
    r = router(priority=100, interval_cs=100)
    r.start(0.0)
    r.receive(advert(0), B, 1.0)
    r.receive(advert(200), C, 1.1)  # another router took over first
    assert r.master_address == C
    assert r.deadline == pytest.approx(1.1 + 3.609375, abs=CS)
    assert r.expire(5.0)[-1] == Transition("backup", "master", "master down")


def _master(priority: int = 100, address: str = A) -> VirtualRouter:
    r = router(priority=priority, interval_cs=10, address=address)
    r.start(0.0)
    r.expire(r.deadline or 0)
    assert r.state == "master"
    return r


def test_master_yields_to_higher_priority() -> None:
    r = _master(100)
    actions = r.receive(advert(101, interval_cs=20), B, 5.0)
    assert actions == [Send(100), Transition("master", "backup", f"higher priority 101 from {B}")]
    assert r.adver_timer is None
    assert r.master_address == B
    assert r.deadline == pytest.approx(5.0 + 0.6 + 156 * 20 / 256 / 100, abs=CS)


def test_master_equal_priority_higher_address_wins() -> None:
    r = _master(100, address=B)
    assert r.receive(advert(100, interval_cs=10), A, 5.0) == [  # A < B: we stay
        Send(100),
        Announce(f"another master {A} with priority 100"),
    ]
    assert r.state == "master"
    assert r.receive(advert(100, interval_cs=10), C, 5.1)[-1] == Transition(
        "master", "backup", f"higher priority 100 from {C}"
    )


def test_equal_priority_compares_ipv6_addresses() -> None:
    r = VirtualRouter(RouterSettings(1, 100, 10, "fe80::2"))
    r.start(0.0)
    r.expire(1.0)
    v6 = Advert(1, 100, 10, ("fd00:198:18:20::100",), 6)
    assert r.receive(v6, "fe80::1", 1.05)[-1] == Announce(
        "another master fe80::1 with priority 100"
    )
    assert r.receive(v6, "fe80::10", 1.06)[-1].new == "backup"  # type: ignore[union-attr]


def test_master_answers_lower_priority_and_announces_again() -> None:
    # keepalived 2.2.7: an advert at once (the other yields) and a GARP burst (the LAN
    # may have followed the other master during a split brain); the cadence is kept.
    r = _master(100)
    timer = r.deadline
    assert r.receive(advert(99, interval_cs=10), C, 0.5) == [
        Send(100),
        Announce(f"another master {C} with priority 99"),
    ]
    assert r.state == "master"
    assert r.deadline == timer


def test_only_a_master_announces_again() -> None:
    r = router(priority=100, interval_cs=10)
    r.start(0.0)
    assert r.receive(advert(99, interval_cs=10), C, 0.1) == []  # a backup lets its timer run
    assert r.receive(advert(99, interval_cs=10), C, 0.1) == []
    assert router().receive(advert(99), C, 0.0) == []  # initialize


def test_master_answers_priority_zero_at_once() -> None:
    r = _master(100)
    assert r.receive(advert(0, interval_cs=10), B, 0.5) == [Send(100)]
    assert r.deadline == pytest.approx(0.6, abs=CS)


def test_other_vrid_ignored() -> None:
    r = _master(100)
    assert r.receive(advert(200, vrid=2), B, 0.5) == []
    assert r.state == "master"


def test_shutdown_master_sends_priority_zero() -> None:
    r = _master(100)
    assert r.shutdown(1.0) == [Send(0), Transition("master", "initialize", "shutdown")]
    assert r.deadline is None
    assert r.master_address is None


def test_shutdown_backup_is_silent() -> None:
    r = router()
    r.start(0.0)
    assert r.shutdown(1.0) == [Transition("backup", "initialize", "shutdown")]
    assert r.deadline is None


def test_link_down_master_goes_fault_and_back() -> None:
    r = _master(100)
    assert r.set_link(False, 1.0) == [Send(0), Transition("master", "fault", "interface down")]
    assert r.deadline is None
    assert r.receive(advert(50, interval_cs=10), B, 1.1) == []
    assert r.expire(5.0) == []
    assert r.state == "fault"
    assert r.set_link(False, 1.2) == []
    assert r.set_link(True, 2.0) == [Transition("fault", "backup", "interface up")]
    assert r.deadline == pytest.approx(2.0 + 0.3 + 156 * 10 / 256 / 100, abs=CS)


def test_link_down_before_start_starts_in_fault() -> None:
    r = router()
    assert r.set_link(False, 0.0) == []
    assert r.start(0.0) == [Transition("initialize", "fault", "interface down")]
    assert r.set_link(True, 1.0)[-1] == Transition("fault", "backup", "interface up")


def test_backup_link_down() -> None:
    r = router()
    r.start(0.0)
    assert r.set_link(False, 1.0) == [Transition("backup", "fault", "interface down")]


def test_settings_validate() -> None:
    with pytest.raises(ValueError):
        RouterSettings(1, 0, 100, A)
    with pytest.raises(ValueError):
        RouterSettings(1, 100, 0, A)


class Lan:
    """Routers on a fake LAN: every Send reaches every other live router after `delay`."""

    def __init__(self, delay: float = 0.001) -> None:
        self.now = 0.0
        self.delay = delay
        self.hosts: dict[str, list[VirtualRouter]] = {}
        self.dead: set[str] = set()
        self.inbox: list[tuple[float, int, str, Advert]] = []
        self.seq = 0
        self.last_sent: dict[str, float] = {}
        self.partitioned = False  # adverts are lost, as by a filter dropping protocol 112
        self.announced: list[tuple[float, str, int]] = []  # (when, who, VRID) of Announce

    def add(self, address: str, routers: list[VirtualRouter]) -> None:
        self.hosts[address] = routers
        for r in routers:
            self.handle(address, r, r.start(self.now))

    def handle(self, address: str, r: VirtualRouter, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Announce):
                self.announced.append((self.now, address, r.settings.vrid))
            if isinstance(a, Send) and not self.partitioned:
                self.seq += 1
                self.last_sent[address] = self.now
                ad = Advert(r.settings.vrid, a.priority, r.settings.interval_cs, ("198.18.20.100",))
                heapq.heappush(self.inbox, (self.now + self.delay, self.seq, address, ad))

    def run_until(self, end: float) -> None:
        while True:
            timers = [
                (r.deadline, addr, r)
                for addr, rs in self.hosts.items()
                if addr not in self.dead
                for r in rs
                if r.deadline is not None
            ]
            next_timer = min(timers, key=lambda t: t[0]) if timers else None
            next_packet = self.inbox[0][0] if self.inbox else None
            candidates = [t for t in (next_timer and next_timer[0], next_packet) if t is not None]
            if not candidates or min(candidates) > end:
                self.now = end
                return
            if next_packet is not None and (next_timer is None or next_packet <= next_timer[0]):
                at, _, sender, ad = heapq.heappop(self.inbox)
                self.now = at
                for addr, rs in self.hosts.items():
                    if addr != sender and addr not in self.dead:
                        for r in rs:
                            self.handle(addr, r, r.receive(ad, sender, self.now))
            else:
                assert next_timer is not None
                self.now, addr, r = next_timer
                self.handle(addr, r, r.expire(self.now))

    def states(self, address: str) -> list[str]:
        return [r.state for r in self.hosts[address]]


def _pair(interval_cs: int = 10) -> Lan:
    lan = Lan()

    def rs(p1: int, p2: int, addr: str) -> list[VirtualRouter]:
        return [
            VirtualRouter(RouterSettings(1, p1, interval_cs, addr)),
            VirtualRouter(RouterSettings(2, p2, interval_cs, addr)),
        ]

    lan.add(A, rs(200, 100, A))
    lan.add(B, rs(100, 200, B))
    return lan


def test_active_active_split_and_sigkill_failover() -> None:
    lan = _pair()
    lan.run_until(2.0)
    assert lan.states(A) == ["master", "backup"]
    assert lan.states(B) == ["backup", "master"]
    lan.dead.add(A)  # SIGKILL: no more adverts from A
    heard = lan.last_sent[A] + lan.delay
    lan.run_until(heard + 0.36)
    assert lan.states(B) == ["backup", "master"]
    # B takes VRID 1 at 3 x 10 cs + skew (156/256 x 10 cs) after A's last advert.
    lan.run_until(heard + 0.37)
    assert lan.states(B) == ["master", "master"]
    assert lan.hosts[B][0].since == pytest.approx(heard + 0.3609375, abs=CS)


def test_split_brain_heals_with_one_announcement_from_the_winner() -> None:
    lan = _pair()
    lan.run_until(2.0)
    lan.partitioned = True
    lan.run_until(3.0)
    assert lan.states(A) == ["master", "master"]
    assert lan.states(B) == ["master", "master"]
    assert lan.announced == []
    lan.partitioned = False
    healed = lan.now
    lan.run_until(healed + 0.3)
    assert lan.states(A) == ["master", "backup"]
    assert lan.states(B) == ["backup", "master"]
    # Each VRID's winner heard the loser (its advert, or its last one as it yielded) within
    # one interval of the heal, and announced.
    assert {(who, vrid) for _, who, vrid in lan.announced} == {(A, 1), (B, 2)}
    assert all(healed < at <= healed + 0.1 + 2 * lan.delay for at, _, _ in lan.announced)


def test_graceful_shutdown_hands_over_after_skew() -> None:
    lan = _pair()
    lan.run_until(2.0)
    a1 = lan.hosts[A][0]
    lan.handle(A, a1, a1.shutdown(lan.now))
    lan.dead.add(A)
    stopped = lan.now
    lan.run_until(stopped + 0.2)
    b1 = lan.hosts[B][0]
    assert b1.state == "master"
    # Delivery (1 ms) + skew of priority 100 at 10 cs: 156/256 x 10 cs = 6.09 cs.
    assert b1.since == pytest.approx(stopped + 0.001 + 0.0609375, abs=CS)
    assert b1.reason == "master resigned (priority 0)"


def test_preemption_when_higher_priority_returns() -> None:
    lan = _pair()
    lan.run_until(1.0)
    lan.dead.add(A)
    lan.run_until(2.0)
    assert lan.states(B) == ["master", "master"]
    lan.dead.discard(A)
    a1, a2 = lan.hosts[A]
    for r in (a1, a2):
        lan.handle(A, r, r.shutdown(lan.now))
        lan.handle(A, r, r.start(lan.now))
    lan.run_until(4.0)
    assert lan.states(A) == ["master", "backup"]
    assert lan.states(B) == ["backup", "master"]


EVENTS = st.lists(
    st.tuples(
        st.floats(0.0, 2.0),  # time step
        st.sampled_from(["advert", "expire", "shutdown", "start", "link_down", "link_up"]),
        st.integers(0, 255),  # advert priority
        st.sampled_from([A, B, C]),  # advert source
        st.integers(1, 300),  # advert interval, centiseconds
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 254), st.integers(1, 300), st.booleans(), EVENTS)
def test_random_events_keep_invariants(
    priority: int,
    interval: int,
    preempt: bool,
    events: list[tuple[float, str, int, str, int]],
) -> None:
    r = VirtualRouter(RouterSettings(1, priority, interval, B, preempt=preempt))
    now = 0.0
    r.start(now)
    for step, kind, prio, source, adv in events:
        now += step
        if kind == "advert":
            actions = r.receive(Advert(1, prio, adv, ()), source, now)
        elif kind == "expire":
            actions = r.expire(now)
        elif kind == "shutdown":
            actions = r.shutdown(now)
        elif kind == "start":
            actions = r.start(now)
        else:
            actions = r.set_link(kind == "link_up", now)
        for a in actions:
            if isinstance(a, Send):
                assert a.priority in (0, priority)
                assert a.priority == priority or isinstance(actions[-1], Transition)
        # RFC 5798 6.4: exactly the timer of the state runs, in the future or now.
        if r.state == "master":
            assert r.adver_timer is not None and r.master_down_timer is None
            assert r.master_address == B
        elif r.state == "backup":
            assert r.master_down_timer is not None and r.adver_timer is None
            assert r.master_down_timer <= now + 3 * 3.0 + 3.0
        else:
            assert r.deadline is None
            assert r.master_address is None
        assert r.since <= now


def test_a_planless_backup_does_not_preempt_then_its_plan_does() -> None:
    # Started at priority 1 (no plan yet), beside a master at 90: it stays backup however
    # long it waits, then its plan (priority 150) lets it preempt at the next timeout.
    r = router(priority=1)
    r.start(0.0)
    for t in range(1, 40):
        assert r.receive(advert(90), B, t * 1.0) == []
        assert r.expire(t * 1.0) == []
    assert r.state == "backup"
    assert r.set_priority(150, 40.0) == []  # a backup says nothing; it preempts by timer
    r.receive(advert(90), B, 40.5)  # lower than ours now: the timer is not reset
    deadline = r.deadline
    assert deadline is not None and deadline < 40.0 + r.master_down_interval + CS
    actions = r.expire(deadline)
    assert actions[0] == Send(150)
    assert r.state == "master"


def test_a_master_tells_its_new_priority_at_once() -> None:
    r = router(priority=100)
    r.start(0.0)
    r.expire(r.deadline or 0.0)
    assert r.state == "master"
    assert r.set_priority(100, 5.0) == []
    assert r.set_priority(50, 5.0) == [Send(50)]
    assert r.deadline == pytest.approx(5.0 + r.interval, abs=CS)
    assert r.settings.priority == 50


def test_a_tracked_fault_stops_a_master_and_its_end_starts_over() -> None:
    r = _master(100)
    assert r.set_fault("interface up0: down", 1.0) == [
        Send(0),
        Transition("master", "fault", "interface up0: down"),
    ]
    # Another reason while in Fault: still Fault, the page says the newer reason.
    assert r.set_fault("dataplane: cannot be programmed", 1.5) == []
    assert (r.state, r.reason) == ("fault", "dataplane: cannot be programmed")
    assert r.set_fault(None, 2.0) == [
        Transition("fault", "backup", "cleared: dataplane: cannot be programmed")
    ]
    assert r.link_up


def test_tracking_lowers_the_priority_or_faults() -> None:
    weights = {"dataplane": -100, "source": -30, "interface up0": 0}
    assert effective(150, weights, {}) == (150, None)
    assert effective(150, weights, {"dataplane": "nft failed"}) == (50, None)
    assert effective(150, weights, {"dataplane": "x", "source": "y"}) == (20, None)
    assert effective(20, weights, {"dataplane": "x"}) == (1, None)  # never 0: not a resign
    assert effective(150, weights, {"interface up0": "down"}) == (150, "interface up0: down")
    assert effective(150, weights, {"interface up9": "down"}) == (150, None)  # not tracked

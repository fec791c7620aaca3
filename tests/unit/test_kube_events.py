"""The Event rate limits, on a clock the test moves."""

from __future__ import annotations

from appliance.kube.api import Connection, KubeApi
from appliance.kube.events import NOTE_MAX, EventRecorder, Regarding, event_body

WEB = Regarding("Service", "default", "web", "uid-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recorder(clock: Clock, **kw: float) -> EventRecorder:
    api = KubeApi(Connection("http://127.0.0.1:1"))  # never used: allow() sends nothing
    return EventRecorder(api, "lb-1", clock=clock, **kw)  # type: ignore[arg-type]


def test_a_flapping_object_gets_a_burst_then_one_per_refill() -> None:
    clock = Clock()
    r = recorder(clock, burst=3, refill=60.0)
    allowed = [r.allow(WEB, "RealServersChanged", f"note {i}") for i in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    clock.now += 59
    assert not r.allow(WEB, "RealServersChanged", "note 10")
    clock.now += 1
    assert r.allow(WEB, "RealServersChanged", "note 11")
    assert not r.allow(WEB, "RealServersChanged", "note 12")
    assert (r.dropped, r.sent) == (9, 0)


def test_other_objects_have_their_own_bucket() -> None:
    clock = Clock()
    r = recorder(clock, burst=1)
    assert r.allow(WEB, "X", "a")
    assert not r.allow(WEB, "X", "b")
    assert r.allow(Regarding("Service", "default", "db"), "X", "a")


def test_the_same_note_twice_is_dropped_within_the_window() -> None:
    clock = Clock()
    r = recorder(clock, burst=10, dedupe=600.0)
    assert r.allow(WEB, "Refused", "port 0")
    assert not r.allow(WEB, "Refused", "port 0")
    assert r.allow(WEB, "Refused", "port 70000")  # a different reason text
    clock.now += 601
    assert r.allow(WEB, "Refused", "port 70000")


def test_a_global_cap_across_objects() -> None:
    clock = Clock()
    r = recorder(clock, burst=5, global_burst=4, global_refill=1.0)
    objects = [Regarding("Service", "default", f"s{i}") for i in range(10)]
    assert [r.allow(o, "X", "n") for o in objects] == [True] * 4 + [False] * 6
    clock.now += 2
    assert [r.allow(o, "X", "n") for o in objects[4:]] == [True, True, False, False, False, False]


def test_forget_drops_memory_of_gone_objects() -> None:
    clock = Clock()
    r = recorder(clock, burst=1)
    assert r.allow(WEB, "X", "n")
    r.forget(set())
    assert r.allow(WEB, "X", "n")


def test_event_body_is_events_k8s_io_v1_and_truncates_long_notes() -> None:
    body = event_body(WEB, "Warning", "Refused", "Validate", "é" * 2000, "lb-1")
    assert body["apiVersion"] == "events.k8s.io/v1"
    assert len(str(body["note"]).encode()) <= NOTE_MAX
    assert str(body["note"]).endswith("...")
    meta = body["metadata"]
    assert isinstance(meta, dict) and meta["name"].startswith("web.")
    assert body["regarding"] == {
        "kind": "Service",
        "namespace": "default",
        "name": "web",
        "apiVersion": "v1",
        "uid": "uid-1",
    }
    assert str(body["eventTime"]).endswith("Z")

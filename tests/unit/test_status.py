"""appliance/status.py: immutable types, and the one JSON form of them (the byte-exact
output is tests/unit/test_web_golden.py's)."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from appliance import status
from appliance.model import Problem, Refusal
from appliance.status import Owner, SourceStatus, Status, VipStatus, to_json

TYPES = [
    cls
    for _, cls in inspect.getmembers(status, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == status.__name__
]


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_every_status_type_is_frozen_with_slots(cls: type) -> None:
    assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
    assert "__slots__" in cls.__dict__, cls


def test_json_keys_are_the_fields_in_order_and_nothing_is_shared_with_the_status() -> None:
    vip = VipStatus("198.18.50.16", "default", ("shop/web",), Owner("lb-a", None, "x", True))
    s = Status(vips=(vip,), problems=(Problem("Service", "shop/web", "why"),))
    out = to_json(s)
    assert list(out) == [f.name for f in dataclasses.fields(Status)]
    assert out["vips"] == [{"address": "198.18.50.16", "pool": "default",
                            "services": ["shop/web"],
                            "owner": {"host": "lb-a", "instance": None, "state": "x",
                                      "here": True}}]  # fmt: skip
    assert out["problems"] == ["Service shop/web: why"]
    out["vips"][0]["services"].append("changed")
    assert vip.services == ("shop/web",)
    json.dumps(out)


def test_the_source_reports_its_own_keys_then_the_saved_snapshot() -> None:
    reported = {"kind": "kube", "resources": [{"kind": "Service", "relists": 2}, {"kind": "Node"}]}
    source = SourceStatus(reported)
    assert source.relists == 2 and SourceStatus().relists == 0
    out = to_json(Status(source=source, refused=(Refusal("Service", "shop", "x", "bad"),)))
    assert out["source"] == {**reported, "saved_plan": None, "saved_state": None}
    assert out["refused"] == ["Service shop/x: bad"]


def test_a_value_with_no_json_form_is_an_error_not_a_guess() -> None:
    with pytest.raises(TypeError, match="object"):
        to_json(Status(restart_needed=(object(),)))  # type: ignore[arg-type]

"""The saved cluster snapshot codec: every field of every model class survives the round
trip, a file from a daemon with other columns is read by name, and anything corrupt or of
another version is refused with one line naming the place. No I/O."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.model import (
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Ingress,
    Node,
    NodeAddress,
    Refusal,
    Service,
    ServicePort,
)
from appliance.plan.snapshotfile import SPECS, decode_state, encode_state, model_fields
from appliance.plan.statefile import StateFileError
from tests.unit.test_daemon import cluster

# Every field of every class set to something other than its default.
PORT = ServicePort("https", "UDP", 443, "https-alt", 30443)
SERVICE = Service(
    "shop", "web", "LoadBalancer", (PORT, ServicePort("dns", "SCTP", 53, 5353)),
    uid="uid-web", creation_timestamp="2026-01-01T00:00:00Z", resource_version="42",
    labels={"app": "web"}, annotations={"appliance.io/scheduler": "wrr"},
    selector={"app": "web", "tier": "front"}, cluster_ips=("10.96.0.10", "fd00::10"),
    headless=True, ip_families=("IPv6", "IPv4"), ip_family_policy="RequireDualStack",
    external_traffic_policy="Local", health_check_node_port=32001,
    session_affinity="ClientIP", session_affinity_timeout=60,
    load_balancer_source_ranges=("198.18.0.0/15",), load_balancer_class="appliance.io/lb",
    load_balancer_ip="198.18.50.16", allocate_load_balancer_node_ports=False,
    external_name="web.example.org", status_ingress_ips=("198.18.50.16",),
    source="manifests/web.yaml",
)  # fmt: skip
ENDPOINT = Endpoint(
    ("198.18.64.10", "198.18.64.11"), ready=False, serving=False, terminating=True,
    node_name="node-1", hostname="web-0",
)  # fmt: skip
SLICE = EndpointSlice(
    "shop", "web-x1", "web", "IPv6", (ENDPOINT, Endpoint(("fd00::64:10",))),
    (EndpointPort("https", 8443, "UDP"),), source="manifests/web.yaml", legacy=True,
)  # fmt: skip
NODE = Node(
    "node-1", (NodeAddress("InternalIP", "198.18.0.11"), NodeAddress("Hostname", "node-1")),
    ready=False, labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""},
    source="manifests/nodes.yaml",
)  # fmt: skip
INGRESS = Ingress("shop", "front", ("shop.example.org",), ("198.18.50.17",), "nginx", "ing.yaml")
REFUSAL = Refusal("Service", "shop", "bad", "spec.ports[0].port: must be 1-65535", "bad.yaml")
FULL = ClusterState(
    services={SERVICE.key: SERVICE, "shop/minimal": Service("shop", "minimal", "ClusterIP")},
    endpoint_slices={"shop/web": (SLICE,), "shop/gone": ()},
    nodes={NODE.name: NODE, "node-2": Node("node-2")},
    ingresses={INGRESS.key: INGRESS},
    refused=(REFUSAL,),
)


def _objects(value: object) -> list[object]:
    """Every model object inside a value (a snapshot, a tuple, a mapping)."""
    if type(value) in SPECS:
        return [value] + [x for f in model_fields(type(value)) for x in _objects(getattr(value, f))]
    if isinstance(value, ClusterState):
        return _objects([value.services, value.endpoint_slices, value.nodes, value.ingresses,
                         value.refused])  # fmt: skip
    if isinstance(value, dict):
        return [x for v in value.values() for x in _objects(v)]
    if isinstance(value, tuple | list):
        return [x for v in value for x in _objects(v)]
    return []


def _default(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_the_codec_knows_every_field_of_the_model_and_the_fixture_sets_each_one() -> None:
    for cls, specs in SPECS.items():
        assert tuple(specs) == model_fields(cls), cls.__name__  # a new field needs a spec
    found = _objects(FULL)
    for cls in SPECS:
        mine = [o for o in found if type(o) is cls]
        assert mine, f"no {cls.__name__} in the fixture"
        for f in dataclasses.fields(cls):
            if f.init and _default(f) is not dataclasses.MISSING:
                assert any(getattr(o, f.name) != _default(f) for o in mine), (cls, f.name)


def test_round_trip_of_every_field_kind() -> None:
    data = encode_state(FULL, 1767225600.25)
    saved = decode_state(data)
    assert saved.state == FULL
    assert saved.saved_at == 1767225600.25
    assert saved.services == 2
    assert list(saved.state.services) == list(FULL.services)  # the snapshot's own order
    assert saved.state.services["shop/web"].key == "shop/web"
    assert isinstance(saved.state.services["shop/web"].ports, tuple)
    assert data == encode_state(decode_state(data).state, 1767225600.25)  # same bytes again
    assert data.endswith(b"\n") and data.count(b"\n") == 1


def test_round_trip_of_an_empty_snapshot_and_of_the_loop_tests_one() -> None:
    assert decode_state(encode_state(ClusterState(), 0)).state == ClusterState()
    assert decode_state(encode_state(cluster(), 5)).state == cluster()


def _full(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any instance of a model class, every field drawn (nested classes too)."""
    hints = get_type_hints(cls)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name in model_fields(cls):
        hint = hints[name]
        inner = get_args(hint)
        if get_origin(hint) is tuple and inner and inner[0] in SPECS:
            fields[name] = st.lists(_full(inner[0]), max_size=3).map(tuple)
        elif get_origin(hint) is tuple:
            fields[name] = st.lists(st.from_type(inner[0]), max_size=3).map(tuple)
        else:
            fields[name] = st.from_type(hint)
    return st.builds(cls, **fields)


@settings(max_examples=60)
@given(
    st.lists(_full(Service), max_size=4),
    st.lists(_full(EndpointSlice), max_size=4),
    st.lists(_full(Node), max_size=3),
    st.lists(_full(Ingress), max_size=2),
    st.lists(_full(Refusal), max_size=2),
    st.floats(0, 4e9),
)
def test_any_snapshot_survives_the_round_trip(
    services: list[Service],
    slices: list[EndpointSlice],
    nodes: list[Node],
    ingresses: list[Ingress],
    refused: list[Refusal],
    saved_at: float,
) -> None:
    state = ClusterState(
        services={s.key: s for s in services},
        endpoint_slices={s.service_key: (s,) for s in slices},
        nodes={n.name: n for n in nodes},
        ingresses={i.key: i for i in ingresses},
        refused=tuple(refused),
    )
    saved = decode_state(encode_state(state, saved_at))
    assert (saved.state, saved.saved_at) == (state, saved_at)


def _file() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode_state(FULL, 100.0))
    return doc


def test_a_file_with_other_columns_is_read_by_name() -> None:
    """Another daemon's file: columns in another order, a defaulted field it did not have."""
    doc = _file()
    columns = doc["fields"]["ServicePort"]
    order = [columns.index(c) for c in ("port", "name", "protocol", "target_port")]
    doc["fields"]["ServicePort"] = [columns[i] for i in order]  # no node_port column
    for svc in doc["services"]:
        svc[3] = [[row[i] for i in order] for row in svc[3]]
    saved = decode_state(json.dumps(doc).encode())
    web = saved.state.services["shop/web"]
    assert web.ports == (ServicePort("https", "UDP", 443, "https-alt"),
                         ServicePort("dns", "SCTP", 53, 5353))  # fmt: skip
    assert dataclasses.replace(web, ports=SERVICE.ports) == SERVICE


def _with(change: Any) -> bytes:
    doc = _file()
    change(doc)
    return json.dumps(doc).encode()


def _set(*path: Any) -> Any:
    *where, last, value = path

    def change(doc: Any) -> None:
        for k in where:
            doc = doc[k]
        doc[last] = value

    return change


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON: line 1 column 1: Expecting value"),
        (encode_state(FULL, 1.0)[:200], "not JSON: line 1 column 197: Unterminated string"),
        (b"\xff\xfe", "not UTF-8 (byte 0)"),
        (b"[]", "must be a JSON object, got list"),
        (b"[" * 100_000, "not JSON"),
        (_with(lambda d: d.pop("version")), "version None is not supported (this daemon reads 1)"),
        (_with(_set("version", 2)), "version 2 is not supported (this daemon reads 1)"),
        (_with(_set("version", "1")), "version '1' is not supported"),
        (_with(_set("version", True)), "version True is not supported"),
        (_with(_set("plan", {})), "unknown field 'plan'"),
        (_with(_set("saved_at", "yesterday")), "saved_at: must be a number"),
        (_with(lambda d: d.pop("saved_at")), "saved_at: must be a number"),
        (b'{"version": 1, "saved_at": NaN}', "saved_at: must be a number"),
        (_with(lambda d: d.pop("fields")), "fields: must be an object"),
        (_with(_set("fields", "Pod", [])), "fields: unknown class 'Pod'"),
        (_with(_set("fields", "Service", "namespace")), "fields.Service: must be a list of field"),
        (_with(lambda d: d["fields"]["Node"].append("zone")), "fields.Node: unknown field 'zone'"),
        (_with(lambda d: d["fields"]["Node"].remove("name")), "fields.Node: 'name' missing"),
        (_with(lambda d: d["fields"]["Node"].append("name")), "fields.Node: a field is named tw"),
        (_with(lambda d: d["fields"].pop("Ingress")), "fields.Ingress: must be a list"),
        (_with(_set("services", {})), "services: must be a list"),
        (_with(_set("services", 0, "web")), "services[0]: must be a list of 25 values (Service)"),
        (_with(_set("services", 0, 3, 0, 2, "443")),
         "services[0].ports[0].port: must be an integer"),
        (_with(_set("services", 0, 3, 1, 1, "ICMP")),
         "services[0].ports[1].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
        (_with(_set("services", 0, 7, {"app": 1})), "services[0].labels: must be an object of str"),
        (_with(_set("services", 1, 11, 0)), "services[1].headless: must be true or false"),
        (_with(_set("services", 0, 4, None)), "services[0].uid: must be a string"),
        (_with(_set("services", 0, 3, 0, 3, 8.5)),
         "services[0].ports[0].target_port: must be a port number, a port name or null"),
        (_with(lambda d: d["services"].append(d["services"][0])),
         "Service shop/web appears twice"),
        (_with(_set("endpoint_slices", [])), "endpoint_slices: must be an object"),
        (_with(_set("endpoint_slices", "shop/web", 0, 4, 1, 0, [1])),
         "endpoint_slices['shop/web'][0].endpoints[1].addresses[0]: must be a string"),
        (_with(_set("endpoint_slices", "shop/web", 0, 3, "IPX")),
         "endpoint_slices['shop/web'][0].address_type: 'IPX' is not one of IPv4, IPv6, FQDN"),
        (_with(_set("nodes", 0, 1, 0, ["InternalIP"])),
         "nodes[0].addresses[0]: must be a list of 2 values (NodeAddress)"),
        (_with(lambda d: d["nodes"].append(d["nodes"][0])), "Node node-1 appears twice"),
        (_with(_set("ingresses", None)), "ingresses: must be a list"),
        (_with(_set("refused", 0, 3, None)), "refused[0].reason: must be a string"),
    ],
)  # fmt: skip
def test_a_corrupt_file_is_refused_with_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(StateFileError) as e:
        decode_state(data)
    message = str(e.value)
    assert reason in message, message
    assert "\n" not in message


def test_a_file_cut_anywhere_is_refused_never_a_crash() -> None:
    data = encode_state(FULL, 1.0)
    for end in range(0, len(data) - 1, 7):
        with pytest.raises(StateFileError):
            decode_state(data[:end])

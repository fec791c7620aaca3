"""The HTTP answer parser and the judging rules (pure; the live tests use real servers)."""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import Any

import pytest

from appliance.health.http import ProbeError, request_bytes
from appliance.health.http import Response as _Response
from appliance.health.targets import Target, same_probe
from appliance.health.verdict import judge, os_error, reason, timed_out


def target(kind: str = "http", **kw: Any) -> Target:
    base = Target("shop/web", "node-1", kind, "198.18.0.11", 8080, 2.0, 1.0, 2, 3)  # type: ignore[arg-type]
    return replace(base, **kw)


# As kube-proxy (pkg/proxy/healthcheck/service_health.go) writes it: dedented, tabs.
KUBE_PROXY_BODY = (
    b'{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "echo"\n\t},\n'
    b'\t"localEndpoints": %d,\n\t"serviceProxyHealthy": %s\n}'
)


def parse(*pieces: bytes) -> _Response | None:
    r = _Response()
    for p in pieces:
        if r.feed(p):
            return r
    return None


def test_content_length_body_in_pieces() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    for cut in range(1, len(raw)):
        r = parse(raw[:cut], raw[cut:])
        assert r is not None and (r.status, r.body, r.keep) == (200, b"hello", True)
    assert parse(raw[:-1]) is None


def test_chunked_body_in_pieces() -> None:
    raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b'4\r\n{"lo\r\n6;ext=1\r\ncal": \r\n0\r\n\r\n'
    for cut in range(1, len(raw)):
        r = parse(raw[:cut], raw[cut:])
        assert r is not None and (r.status, r.body) == (503, b'{"local": ')
    assert parse(raw[:-2]) is None


def test_body_until_close() -> None:
    r = _Response()
    assert not r.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body")
    assert r.keep is False
    assert r.eof() and r.body == b"some body"


def test_connection_close_is_honoured() -> None:
    r = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert r is not None and r.keep is False


def test_no_content_has_no_body() -> None:
    r = parse(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert r is not None and (r.status, r.body) == (204, b"")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP response: b'SSH-2.0-OpenSSH_9.2'"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length b'-1'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000, "response header too large"),
        (b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 70000, "response body too large"),
    ],
)
def test_garbage_is_one_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(ProbeError) as e:
        parse(raw)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, b'{"service":{"namespace":"a","name":"b"},"localEndpoints":2}', ""),
        (200, b"", ""),  # a proxy that answers without kube-proxy's JSON: trust the code
        (200, b'{"localEndpoints":0}', "200 but localEndpoints is 0"),
        (503, b'{"localEndpoints":0}', "503: no local endpoints"),
        (503, b"not json localEndpoints", "503: no local endpoints"),
        (503, b'{"localEndpoints":2}', "503: kube-proxy unhealthy (2 local endpoints)"),
        (200, KUBE_PROXY_BODY % (3, b"true"), ""),
        (503, KUBE_PROXY_BODY % (0, b"true"), "503: no local endpoints"),
        (503, KUBE_PROXY_BODY % (1, b"false"), "503: kube-proxy unhealthy (1 local endpoints)"),
        (200, b'{"localEndpoints": 0 }', "200 but localEndpoints is 0"),
        (200, b'{"localEndpoints": true}', ""),  # not a count: as if absent
        (500, b"", "HTTP 500 (expected 200)"),
    ],
)
def test_kube_proxy_local(status: int, body: bytes, verdict: str) -> None:
    assert judge(target("kube-proxy"), status, body) == verdict


def test_kube_proxy_node() -> None:
    t = target("kube-proxy-node", path="/healthz")
    assert judge(t, 200, b"{}") == ""
    assert judge(t, 503, b"") == "503: kube-proxy unhealthy or node being deleted"
    assert judge(t, 404, b"") == "HTTP 404 (expected 200)"


def test_http_status_and_body_match() -> None:
    t = target(expect=(200, 204), body="ready")
    assert judge(t, 200, b"all ready") == ""
    assert judge(t, 200, b"starting") == "body does not contain 'ready'"
    assert judge(t, 301, b"ready") == "HTTP 301 (expected 200,204)"


def test_request_bytes() -> None:
    assert request_bytes(target(path="/ready")) == (
        b"GET /ready HTTP/1.1\r\nHost: 198.18.0.11:8080\r\n"
        b"User-Agent: appliance-health/1\r\nAccept: */*\r\n\r\n"
    )
    assert b"Host: [fd00:198:18::11]:8080\r\n" in request_bytes(target(address="fd00:198:18::11"))


@pytest.mark.parametrize(
    ("kind", "raw", "verdict"),
    [
        (
            "kube-proxy",
            b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b'{"localEndpoints":1}',
            "",
        ),
        (
            "kube-proxy",
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'14\r\n{"localEndpoints":0}\r\n0\r\n\r\n',
            "503: no local endpoints",
        ),
        ("kube-proxy-node", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""),
        ("http", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP 404 (expected 200)"),
    ],
)
def test_bytes_in_verdict_out(kind: str, raw: bytes, verdict: str) -> None:
    """The codec and the rules together, with no socket: what the reactor does per answer."""
    r = parse(raw)
    assert r is not None
    assert judge(target(kind), r.status, r.body or b"") == verdict


def test_socket_errors_read_as_one_line() -> None:
    assert reason(os_error(errno.ECONNREFUSED)) == "connection refused"
    assert reason(os_error(errno.EHOSTUNREACH)) == "no route to host"
    assert reason(ConnectionResetError()) == "connection reset"
    assert reason(ValueError()) == "ValueError"
    assert timed_out(target(timeout=0.25)) == "timeout after 0.25s"


def test_same_probe_ignores_timing_only() -> None:
    t = target()
    assert same_probe(t, replace(t, interval=9.0, timeout=3.0, rise=1, fall=1))
    assert not same_probe(t, replace(t, path="/other"))
    assert not same_probe(t, replace(t, kind="tcp"))

"""What a check's answer means: the rules that turn a status and body (or an error) into
"healthy" or a one-line reason. Pure, like the parser it follows (`http.py`).
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from appliance.health.targets import Target


class Outcome(NamedTuple):
    """One check's result. A named tuple, not a dataclass: one is made per check, and
    a frozen dataclass costs four times as much to build."""

    ok: bool
    error: str = ""  # why it failed, one line; "" when ok
    latency: float = 0.0  # seconds from the start of the check to its verdict


def judge(target: Target, status: int, body: bytes) -> str:
    """ "" when the answer means healthy, else why not."""
    if target.kind == "kube-proxy":
        # kube-proxy's healthCheckNodePort: 200 with localEndpoints > 0, 503 without.
        count = _local_endpoints(body)
        if status == 200:
            return "200 but localEndpoints is 0" if count == 0 else ""
        if status == 503:
            if count in (0, None):
                return "503: no local endpoints"
            # Since Kubernetes 1.28 also while kube-proxy itself is unhealthy.
            return f"503: kube-proxy unhealthy ({count} local endpoints)"
        return f"HTTP {status} (expected 200)"
    if target.kind == "kube-proxy-node":
        if status == 200:
            return ""
        if status == 503:
            return "503: kube-proxy unhealthy or node being deleted"
        return f"HTTP {status} (expected 200)"
    if status not in target.expect:
        want = ",".join(map(str, target.expect))
        return f"HTTP {status} (expected {want})"
    if target.body is not None and target.body.encode() not in body:
        return f"body does not contain {target.body[:40]!r}"
    return ""


# kube-proxy prints its JSON by hand (pretty, with tabs); the key cannot occur inside the
# namespace or name (DNS labels), so a search finds it without parsing the document.
_LOCAL_ENDPOINTS = re.compile(rb'"localEndpoints"\s*:\s*(\d{1,9})\s*[,}]')


def _local_endpoints(body: bytes) -> int | None:
    if b"localEndpoints" not in body:
        return None
    m = _LOCAL_ENDPOINTS.search(body)
    if m:
        return int(m.group(1))
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    n = doc.get("localEndpoints") if isinstance(doc, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def reason(e: BaseException) -> str:
    """Why a socket call failed, as the status page says it."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return str(e) or "connection reset"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def os_error(code: int) -> OSError:
    """The exception Python raises for errno `code` (ConnectionRefusedError for ...)."""
    return OSError(code, os.strerror(code))  # OSError(...) picks the subclass by errno


def timed_out(target: Target) -> str:
    return f"timeout after {target.timeout:g}s"

"""Flask: the page, `/api/v1/state`, `/healthz`, `/readyz`, `/metrics`, and the one
thing it can change: `POST /api/v1/ha/resign` and `/api/v1/ha/resume` (planned handover).

The daemon's loop builds an immutable `Status` (appliance/status.py) and swaps it into a
`StateHolder`; the web thread only ever reads that one reference, so it never touches the
loop's objects. The JSON API is that status through `to_json`, made once per status (the page
polls it). A
change goes to the loop as a call it runs itself (`actions`), and the answer comes back.

Changes need the web's username and password when they are configured; without them,
only a client on this host's loopback may make one (the `appliance ha resign` command).
They take JSON only, which a cross-site form cannot send.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.serving import BaseWSGIServer, make_server

from appliance.config import WebConfig
from appliance.status import Status, to_json

STALE_AFTER = 10.0  # seconds without a fresh snapshot: the loop is stuck, /healthz says so
REFRESH = 5  # seconds between page reloads
NOTHING_YET = Status()  # what the page and /metrics show before the first snapshot
NOTHING_YET_JSON = {"ready": False, "host": "", "events": []}  # and /api/v1/state


class StateHolder:
    """The latest snapshot; replaced whole, read without locks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._status: Status | None = None
        self._json: tuple[Status, bytes] | None = None  # the last status, encoded once
        self._at = clock()

    def set(self, status: Status) -> None:
        self._status = status
        self._at = self.clock()

    def get(self) -> Status:
        return NOTHING_YET if self._status is None else self._status

    def json(self) -> dict[str, Any]:
        return dict(NOTHING_YET_JSON) if self._status is None else to_json(self._status)

    def body(self, encode: Callable[[dict[str, Any]], bytes]) -> bytes:
        """`json()` encoded, once per status: at 10,000 Services that is 0.15 s, and
        pollers ask every second or more often."""
        status = self._status
        if status is None:
            return encode(dict(NOTHING_YET_JSON))
        made = self._json
        if made is None or made[0] is not status:
            made = (status, encode(to_json(status)))
            self._json = made  # one reference swapped: readers never see half of it
        return made[1]

    @property
    def age(self) -> float:
        return self.clock() - self._at


# (what, JSON body) -> JSON answer; raises ValueError for a request it refuses.
Actions = Callable[[str, dict[str, Any]], dict[str, Any]]
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def create_app(
    holder: StateHolder,
    registry: CollectorRegistry,
    config: WebConfig | None = None,
    actions: Actions | None = None,
) -> Flask:
    web = config or WebConfig()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.jinja_env.filters["ago"] = _ago
    app.jinja_env.filters["clock"] = _clock
    app.jinja_env.filters["datetime"] = _datetime

    @app.before_request
    def _auth() -> Response | None:
        if web.username is None or request.path in ("/healthz", "/readyz"):
            return None
        a = request.authorization
        ok = (
            a is not None
            and hmac.compare_digest((a.username or "").encode(), web.username.encode())
            and hmac.compare_digest((a.password or "").encode(), (web.password or "").encode())
        )
        if ok:
            return None
        return Response(
            "authentication required\n",
            401,
            {"WWW-Authenticate": 'Basic realm="appliance"'},
            mimetype="text/plain",
        )

    @app.get("/")
    def page() -> str:
        return render_template("index.html", s=holder.get(), refresh=REFRESH)

    @app.get("/api/v1/state")
    def state() -> Response:
        # What jsonify() would send, byte for byte (its key order, separators, newline).
        body = holder.body(lambda data: app.json.response(data).get_data())  # type: ignore[attr-defined]
        return app.response_class(body, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        if holder.age > STALE_AFTER:
            return f"stale: no snapshot for {holder.age:.0f}s\n", 503
        return "ok\n", 200

    @app.get("/readyz")
    def readyz() -> tuple[str, int]:
        if holder.get().ready:
            return "ready\n", 200
        return "not ready: no sync yet\n", 503

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.post("/api/v1/ha/<what>")
    def ha_change(what: str) -> tuple[Response, int]:
        if what not in ("resign", "resume"):
            return jsonify(error=f"no such change: {what} (resign, resume)"), 404
        if web.username is None and request.remote_addr not in LOOPBACK:
            return jsonify(error="changes from other hosts need web.username/password"), 403
        body = request.get_json(silent=True)
        if not request.is_json or not isinstance(body, dict):
            return jsonify(error='send a JSON object, e.g. {"instance": null}'), 415
        if actions is None:
            return jsonify(error="this server makes no changes"), 503
        try:
            return jsonify(actions(what, body)), 200
        except ValueError as e:
            return jsonify(error=str(e)), 400

    return app


def _ago(then: float | None, now: float | None = None) -> str:
    if not then:
        return "never"
    seconds = max(0.0, (now or time.time()) - then)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _clock(then: float | None) -> str:
    if not then:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(then))


def _datetime(then: float | None) -> str:
    if not then:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then))


class WebServer:
    """werkzeug's threaded server on the management address, in a daemon thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        # serve_forever polls for shutdown; its default half second would eat the stop budget
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="web",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

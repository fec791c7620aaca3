"""`keyvalue_logger`: key-values for the daemon's JSON lines, plain stdlib elsewhere."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
import structlog

from appliance.logs import configure, keyvalue_logger


def test_under_configure_every_key_is_in_the_json_line() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("werkzeug").level)
    configure("info", stream=out)
    try:
        log = keyvalue_logger("appliance.dns.server")
        log.info("dns: listening", host="127.0.0.1", port=5353, udp_sockets=2)
        log.debug("not shown at info", port=1)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("dns: failed to answer a query", transport="udp")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("werkzeug").setLevel(saved[2])
        structlog.reset_defaults()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert {k: first[k] for k in ("event", "level", "logger", "host", "port", "udp_sockets")} == {
        "event": "dns: listening",
        "level": "info",
        "logger": "appliance.dns.server",
        "host": "127.0.0.1",
        "port": 5353,
        "udp_sockets": 2,
    }
    assert (second["level"], second["transport"]) == ("error", "udp")
    assert "ValueError: boom" in second["exception"]


def test_the_event_is_the_records_message_and_the_keys_its_attributes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.health"):
        keyvalue_logger("appliance.health").warning("health: x is down", node="node-1")
    (record,) = caplog.records
    assert (record.getMessage(), record.levelname, getattr(record, "node", None)) == (
        "health: x is down",
        "WARNING",
        "node-1",
    )


def test_unconfigured_it_writes_warnings_to_stderr_and_nothing_to_stdout() -> None:
    code = (
        "from appliance.logs import keyvalue_logger as k; l = k('appliance.health'); "
        "l.info('quiet', a=1); l.warning('health: x is down', node='n')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (out.stdout, out.stderr) == ("", "health: x is down\n")

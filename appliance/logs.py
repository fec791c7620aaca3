"""Structured logs: one JSON object per line on stdout, which journald keeps.

Our own code logs key-value pairs: with structlog (`log.info("synced", vips=3)`), or with
the standard `logging` module and `extra=` where a module's messages are read as text (the
VRRP speaker's, like keepalived's: operators grep them). Both, and other packages' stdlib
logs, go through the same renderer, so every line parses.
A `keyvalue_logger` is that second way with structlog's calling convention (`log.info(
"event", key=value)`, the keys a record's `extra`), for code that also runs outside the daemon.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog

_SHARED: list[structlog.types.Processor] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def keyvalue_logger(name: str) -> structlog.stdlib.BoundLogger:
    """`log.info("event", key=value)` onto the standard logger `name`, for code that also
    runs outside the daemon (`appliance dns serve`, `appliance health check`, tests): the
    event becomes the record's message and the key-values its `extra`. Where nothing is
    configured it logs as `logging` does (warnings to stderr, never to stdout, which those
    commands print their results on); under `configure` every key is in the JSON line."""
    processors = [structlog.stdlib.filter_by_level, structlog.stdlib.render_to_log_kwargs]
    return structlog.stdlib.BoundLogger(logging.getLogger(name), processors, {})


def configure(level: str = "info", stream: IO[str] | None = None) -> None:
    """JSON lines on `stream` (stdout) for structlog and stdlib loggers alike."""
    formatter = structlog.stdlib.ProcessorFormatter(
        # `extra=` fields of stdlib calls become keys, as structlog's own keyword arguments:
        # the VRRP speaker keeps keepalived-like messages and adds interface=, vrid= ...
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # werkzeug logs one line per request: noise at info level for a self-refreshing page
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

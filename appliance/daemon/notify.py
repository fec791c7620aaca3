"""systemd's notify protocol: datagrams to $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STOPPING=1).

A few lines of socket code instead of a dependency: the protocol is one datagram of
newline-separated KEY=VALUE pairs to a unix socket whose name starts with "@" when it
lives in the abstract namespace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Tells systemd how the service is doing; does nothing when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        # systemd asks for a ping at least every WATCHDOG_USEC; half of it leaves slack.
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and for_us else None
        )
        self.sent: list[str] = []  # what was sent, for the status page and tests

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(), self.address)
        except OSError:
            return False  # systemd gone (shutdown): nothing to tell
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

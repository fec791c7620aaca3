"""The client's view of an outage: a new HTTP request through a VIP every `every` seconds,
each with a short timeout, for `seconds`. Runs in the client's namespace and prints JSON:
the longest time between two answered requests, and how many failed.

    python adm_probe.py VIP PORT SECONDS [EVERY]
"""

from __future__ import annotations

import json
import socket
import sys
import time


def ask(vip: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((vip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main() -> None:
    vip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    every = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
    print("ready", flush=True)
    start = time.monotonic()
    last_ok = start
    longest = 0.0
    failed = ok = 0
    while (now := time.monotonic()) - start < seconds:
        if ask(vip, port, 0.1):
            ok += 1
            longest = max(longest, now - last_ok)
            last_ok = time.monotonic()
        else:
            failed += 1
        time.sleep(every)
    print(json.dumps({"outage_ms": round(longest * 1000), "failed": failed, "ok": ok}))


if __name__ == "__main__":
    main()

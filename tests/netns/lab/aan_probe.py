"""The test's client, run inside the client namespace: plain sockets and http.client, no
code of the appliance. One JSON document (or one line) on stdout per command.

    python aan_probe.py http HOST PORT [N] [PATH]   N GETs, each on a new connection
    python aan_probe.py connect HOST PORT SECONDS   "connected" | "refused" | "timeout"
    python aan_probe.py udp HOST PORT SECONDS       the answer to one datagram, or "timeout"
    python aan_probe.py watch HOST PORT STATUS SECONDS
        prints "watching", then the monotonic time the status was first seen (or "never")
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time


def get(host: str, port: int, path: str = "/") -> dict[str, object]:
    c = http.client.HTTPConnection(host, port, timeout=2)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
        return {"status": r.status, "headers": dict(r.getheaders()), "body": body}
    finally:
        c.close()


def connect(host: str, port: int, seconds: float) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(seconds)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
    return "connected"


def udp(host: str, port: int, seconds: float) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(seconds)
        s.sendto(b"hello\n", (host, port))
        try:
            return s.recv(4096).decode()
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"


def watch(host: str, port: int, status: int, seconds: float) -> str:
    print("watching", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if get(host, port)["status"] == status:
                return repr(time.monotonic())
        except OSError:
            pass
        time.sleep(0.005)
    return "never"


def main(argv: list[str]) -> None:
    what, host, port = argv[0], argv[1], int(argv[2])
    if what == "http":
        n = int(argv[3]) if len(argv) > 3 else 1
        path = argv[4] if len(argv) > 4 else "/"
        print(json.dumps([get(host, port, path) for _ in range(n)]))
    elif what == "connect":
        print(connect(host, port, float(argv[3])))
    elif what == "udp":
        print(json.dumps(udp(host, port, float(argv[3]))))
    elif what == "watch":
        print(watch(host, port, int(argv[3]), float(argv[4])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

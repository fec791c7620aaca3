"""A client that lives in the client namespace and makes requests on command.

One line in, one line out on stdin/stdout, so a test drives many requests without paying
for a process each:
  tcp SRC DST PORT          -> the name that answered, or "ERR <why>"
  sctp SRC DST PORT         -> the same over SCTP
  udp SRC SPORT DST PORT    -> the name that answered, or "ERR <why>"
  open ID SRC DST PORT      -> the name, keeping the connection
  send ID                   -> the name, over the kept connection
  close ID                  -> "ok"
"""

from __future__ import annotations

import socket
import sys

TIMEOUT = 1.0


def family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ask(s: socket.socket) -> str:
    s.sendall(b"hi\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def main() -> None:
    held: dict[str, socket.socket] = {}
    for line in sys.stdin:
        words = line.split()
        try:
            if words[0] == "tcp":
                src, dst, port = words[1], words[2], int(words[3])
                with socket.socket(family(dst), socket.SOCK_STREAM) as s:
                    s.settimeout(TIMEOUT)
                    s.bind((src, 0))
                    s.connect((dst, port))
                    out = ask(s)
            elif words[0] == "sctp":
                src, dst, port = words[1], words[2], int(words[3])
                kind = socket.IPPROTO_SCTP
                with socket.socket(family(dst), socket.SOCK_STREAM, kind) as s:
                    s.settimeout(TIMEOUT)
                    s.bind((src, 0))
                    s.connect((dst, port))
                    out = ask(s)
            elif words[0] == "udp":
                src, sport, dst, port = words[1], int(words[2]), words[3], int(words[4])
                with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
                    s.settimeout(TIMEOUT)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((src, sport))
                    s.sendto(b"hi\n", (dst, port))
                    out = s.recv(100).decode().strip()
            elif words[0] == "open":
                s = socket.socket(family(words[3]), socket.SOCK_STREAM)
                s.settimeout(TIMEOUT)
                s.bind((words[2], 0))
                s.connect((words[3], int(words[4])))
                held[words[1]] = s
                out = ask(s)
            elif words[0] == "send":
                out = ask(held[words[1]])
            elif words[0] == "close":
                held.pop(words[1]).close()
                out = "ok"
            else:
                out = "ERR unknown command"
        except (OSError, KeyError, IndexError, ValueError) as e:
            out = f"ERR {type(e).__name__} {e}"
        print(out, flush=True)


if __name__ == "__main__":
    main()

"""A cluster node's stand-in for the daemon tests: the NodePort answers with the node's
name over HTTP; kube-proxy's :10256/healthz answers 200 unless told `--no-healthz`
(a node whose kube-proxy is gone: the check is refused).

    python adm_node.py NAME ADDRESS NODEPORT[,NODEPORT...] [--no-healthz]

Prints "ready" once every socket listens.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer's own server_bind asks DNS for our name (getfqdn): seconds of timeout
        # in a namespace without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "node", self.server_address[1]


def handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    return Handler


def main() -> None:
    name, address, ports = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    reply = handler(name.encode() + b"\n")
    servers = [Server((address, int(port)), reply) for port in ports]
    ok = b'{"lastUpdated": "2026-01-01T00:00:00Z", "currentTime": "2026-01-01T00:00:00Z"}'
    if "--no-healthz" not in sys.argv:
        servers.append(Server((address, 10256), handler(ok)))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

"""A TCP port of this machine's loopback that leads into the lab: the status pages.

The lab's LAN exists only inside its namespaces, so a browser on this machine cannot reach
198.18.0.21:8080. This process binds 127.0.0.1:<port> in the namespace it starts in (the
machine's), then moves itself into the client's namespace (setns(2)): every connection it
accepts is relayed from there, as if the client had opened the page. No address of the
lab touches the machine's own interfaces.

    python -m appliance.lab.forward --listen 127.0.0.1:8080 --netns aanlab-client \
        --to 198.18.0.21:8080
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence

from appliance.address import socket_family_of

CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into the named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listener: socket.socket, target: tuple[str, int]) -> None:
    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.wait_for(asyncio.open_connection(*target), 3.0)
        except (OSError, TimeoutError):
            # The LB host is down (a failover demo): say so instead of a reset.
            body = f"lab forward: {target[0]}:{target[1]} does not answer\n".encode()
            w.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await w.drain()
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(relay, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.lab.forward", description=__doc__)
    p.add_argument("--listen", required=True, help="host:port on this machine")
    p.add_argument("--netns", required=True, help="the namespace to connect from")
    p.add_argument("--to", required=True, help="host:port inside the lab")
    args = p.parse_args(argv)
    host, port = split_hostport(args.listen)
    listener = socket.socket(socket_family_of(host))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as e:
        print(f"lab forward: cannot listen on {args.listen}: {e.strerror}", file=sys.stderr)
        return 1
    listener.listen(64)
    listener.setblocking(False)
    enter_netns(args.netns)  # after bind: the listener stays in the machine's namespace
    asyncio.run(serve(listener, split_hostport(args.to)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A node's NodePort stand-in: answers every TCP line and UDP datagram with its name.

Run inside a node namespace: `python adp_nodeserver.py NAME PORT [PORT...]`. Dual stack.
Prints "ready" once every socket listens.
"""

from __future__ import annotations

import asyncio
import socket
import sys

SCTP_PORT = 30090


class Udp(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.name + b"\n", addr)


async def main(name: str, ports: list[int]) -> None:
    reply = name.encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                writer.write(reply + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    servers = []
    for port in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        servers.append(await asyncio.start_server(handle, sock=s, backlog=512))
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind(("::", port))
        await loop.create_datagram_endpoint(lambda: Udp(reply), sock=u)
    try:  # SCTP where the kernel has it (the VM's Debian kernel does; not every host)
        sc = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
        sc.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sc.bind(("::", SCTP_PORT))
        servers.append(await asyncio.start_server(handle, sock=sc, backlog=64))
    except OSError:
        pass
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [int(p) for p in sys.argv[2:]]))

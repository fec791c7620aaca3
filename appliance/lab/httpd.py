"""Just enough HTTP/1.1 for the lab's stand-in node: read a request head, answer, close.

The pods and kube-proxy's health ports answer whatever arrives; a client that sends nothing
gets its answer after a second, like a server that times out waiting for a request line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

HEAD_TIMEOUT = 1.0  # seconds to wait for the blank line that ends a request head
HEAD_LIMIT = 65536
REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}

Header = tuple[str, str]
Reply = tuple[int, Sequence[Header], bytes]
Handler = Callable[[bytes], Reply]
"""The request head (possibly partial, possibly empty) -> status, headers, body."""


async def read_head(reader: asyncio.StreamReader, timeout: float = HEAD_TIMEOUT) -> bytes:
    """Bytes up to and including the blank line, or what came within `timeout`."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < HEAD_LIMIT:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(4096), left)
        except (TimeoutError, ConnectionError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def request_path(head: bytes) -> str:
    """The path of the request line without its query ("" when there is no request line)."""
    line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split()
    if len(parts) < 2:
        return ""
    return parts[1].split("?", 1)[0]


def response(status: int, headers: Sequence[Header], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def serve(handler: Handler, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """One connection: read the head, write the answer, close."""
    try:
        head = await read_head(reader)
        status, headers, body = handler(head)
        w.write(response(status, headers, body))
        await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()
        with contextlib.suppress(ConnectionError, OSError):
            await w.wait_closed()


async def listen(handler: Handler, host: str | None, port: int) -> asyncio.Server:
    """An HTTP server on host:port (None: every address of both families)."""
    return await asyncio.start_server(
        lambda r, w: serve(handler, r, w), host=host, port=port, reuse_address=True
    )

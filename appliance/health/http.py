"""The HTTP/1.1 side of a check, as pure functions of bytes: the request a target sends,
and an incremental parser of the answer (status, Content-Length or chunked body,
Connection). No sockets: `probe.py` feeds it what it reads.

Just enough HTTP for a health endpoint: one fixed GET, a status line and a small body.
"""

from __future__ import annotations

from appliance.address import host_port
from appliance.health.targets import Target

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
RECV = MAX_HEADER + MAX_BODY


class ProbeError(Exception):
    """A check that could not complete, with the reason for the status page."""


def request_bytes(target: Target) -> bytes:
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host_port(target.address, target.port)}\r\n"
        "User-Agent: appliance-health/1\r\nAccept: */*\r\n\r\n"
    ).encode("ascii", "replace")


def _header(fields: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (given as b"\\r\\nname:") in the lower-cased header
    block `fields` (starting at the CRLF after the status line)."""
    at = fields.find(name)
    if at < 0:
        return None
    start = at + len(name)
    end = fields.find(b"\r\n", start)
    return (fields[start:] if end < 0 else fields[start:end]).strip()


class Response:
    """An incremental HTTP/1.1 response parser over one connection's bytes."""

    __slots__ = ("body", "buf", "chunked", "keep", "length", "status")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.length: int | None = None  # None: until EOF (or chunked)
        self.chunked = False
        self.keep = True
        self.body: bytes | None = None

    def feed(self, data: bytes) -> bool:
        """True once the whole response is here. Raises ProbeError on garbage."""
        if not self.status and not self.buf:
            # The usual case: the whole answer in the first read. No copy into the buffer.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._head(data[:end])
                if self.length is not None and len(data) - end - 4 >= self.length:
                    self.body = data[end + 4 : end + 4 + self.length]
                    return True
                data = data[end + 4 :]
        self.buf += data
        if not self.status:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER:
                    raise ProbeError("response header too large")
                return False
            self._head(bytes(self.buf[:end]))
            del self.buf[: end + 4]
        if self.chunked:
            return self._chunks()
        if self.length is not None:
            if len(self.buf) >= self.length:
                self.body = bytes(self.buf[: self.length])
                return True
            return False
        if len(self.buf) > MAX_BODY:
            raise ProbeError("response body too large")
        return False

    def _head(self, head: bytes) -> None:
        if len(head) > MAX_HEADER:
            raise ProbeError("response header too large")
        eol = head.find(b"\r\n")
        first = head if eol < 0 else head[:eol]
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProbeError(f"not an HTTP response: {bytes(first[:40])!r}")
        self.status = int(parts[1])
        self.keep = parts[0] != b"HTTP/1.0"
        # Three lookups in the lower-cased head instead of a loop over every header line.
        fields = head[eol:].lower() if eol >= 0 else b""
        v = _header(fields, b"\r\ncontent-length:")
        if v is not None:
            if not v.isdigit() or int(v) > MAX_BODY:
                raise ProbeError(f"bad Content-Length {bytes(v[:20])!r}")
            self.length = int(v)
        v = _header(fields, b"\r\ntransfer-encoding:")
        if v is not None and b"chunked" in v:
            self.chunked = True
        v = _header(fields, b"\r\nconnection:")
        if v == b"close":
            self.keep = False
        elif v == b"keep-alive":
            self.keep = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        if self.length is None and not self.chunked:
            self.keep = False  # the body ends when the server closes

    def _chunks(self) -> bool:
        body = bytearray()
        pos = 0
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProbeError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                # Trailers are not expected from health endpoints; need the final CRLF.
                if buf.find(b"\r\n", eol + 2) < 0:
                    return False
                self.body = bytes(body)
                return True
            if eol + 2 + size + 2 > len(buf):
                return False
            body += buf[eol + 2 : eol + 2 + size]
            if len(body) > MAX_BODY:
                raise ProbeError("response body too large")
            pos = eol + 2 + size + 2

    def eof(self) -> bool:
        """The server closed: complete if the body was meant to run until then."""
        if self.status and self.length is None and not self.chunked:
            self.body = bytes(self.buf)
            return True
        return False

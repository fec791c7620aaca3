"""nftables transactions in this process, through libnftables (the library the `nft`
command and python3-nftables wrap), with the `nft` command as the fallback.

Why: `nft -f` as a process costs 20-40 ms a transaction on a busy 2-core host (fork, exec,
the library's start-up), libnftables 2-4 ms once warm. That is most of the time from a
manifest edit to the new real server in the kernel. The call runs in a worker thread
(ctypes releases the GIL), so a big first load never stalls the event loop and its VRRP
adverts.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading

LIBNFTABLES = "libnftables.so.1"


class Nft:
    """`await run(text)` is `nft -f -` with that text: b"" when applied, else nft's stderr."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._ctx: int | None = None
        self._lock = threading.Lock()  # one context, one transaction at a time
        try:
            lib = ctypes.CDLL(LIBNFTABLES)
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            ctx = lib.nft_ctx_new(0)
            if ctx:
                lib.nft_ctx_buffer_output(ctx)  # listings stay in memory, off our stdout
                lib.nft_ctx_buffer_error(ctx)
                self._lib, self._ctx = lib, ctx
        except (OSError, AttributeError):
            pass

    @property
    def in_process(self) -> bool:
        return self._ctx is not None

    def _run_here(self, text: bytes) -> bytes:
        with self._lock:
            if self._lib is None or self._ctx is None:
                return b"libnftables: closed"
            if self._lib.nft_run_cmd_from_buffer(self._ctx, text) == 0:
                return b""
            error: bytes | None = self._lib.nft_ctx_get_error_buffer(self._ctx)
            return error or b"failed"

    async def run(self, text: str) -> bytes:
        if self.in_process:
            return await asyncio.to_thread(self._run_here, text.encode())
        p = await asyncio.create_subprocess_exec(
            "nft", "-f", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await p.communicate(text.encode())
        return b"" if p.returncode == 0 else err or b"failed"

    def close(self) -> None:
        with self._lock:
            if self._lib is not None and self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
            self._lib = self._ctx = None

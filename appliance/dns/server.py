"""The DNS server: UDP and TCP on the configured addresses, answering from a `Zone`.

UDP is served by plain threads in a blocking recvfrom/sendto loop: asyncio's datagram
transport costs more per packet than the whole answer does, and the socket calls release
the GIL. TCP (the fallback for truncated answers, few queries) runs on the event loop.
The zone is swapped by replacing one reference, so a reply is built from one zone.

The daemon uses it as:

    server = DnsServer(config.dns)
    await server.start()
    await server.update(desired.records)   # after every plan(); cheap when unchanged
    server.stats()                          # for the status page
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.address import socket_family_of
from appliance.config import DnsConfig
from appliance.dns import batch
from appliance.dns.responder import DROPPED, RCODE_NAMES, Responder
from appliance.dns.zone import SERVFAIL, Zone, build_zone, next_serial
from appliance.logs import keyvalue_logger
from appliance.model import Record

log = keyvalue_logger(__name__)

TCP_IDLE = 10.0  # seconds a TCP client may sit between queries (RFC 7766 suggests a few)
TCP_CLIENTS = 256  # concurrent TCP connections; more are closed at once
_SLOTS = 18  # rcodes 0..16; the last slot (index -1 == DROPPED) counts unanswered packets


@dataclass(frozen=True, slots=True)
class DnsStats:
    """What the status page shows."""

    serial: int
    record_count: int
    zones: tuple[str, ...]
    queries: Mapping[str, int]  # rcode name -> count, since start
    udp: int
    tcp: int
    problems: tuple[str, ...]
    outside: int
    listening: tuple[str, ...] = ()  # "host:port", UDP and TCP each


class DnsServer:
    def __init__(
        self,
        config: DnsConfig,
        zone: Zone | None = None,
        workers: int = 1,
        batched: bool | None = None,
    ) -> None:
        self.config = config
        self.workers = max(1, workers)
        # recvmmsg/sendmmsg where the platform has them (None: decide by that)
        self.batched = batch.available() if batched is None else batched and batch.available()
        self._records: frozenset[Record] | None = None
        self._updating = asyncio.Lock()
        first = zone if zone is not None else build_zone((), config, next_serial(0, time.time()))
        self._responder = Responder(first)
        self._udp: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._tcp: list[asyncio.Server] = []
        self._udp_counts: list[list[int]] = []
        self._tcp_counts = [0] * _SLOTS
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._stopping = False
        self.addresses: list[tuple[str, int]] = []

    @property
    def zone(self) -> Zone:
        return self._responder.zone

    def set_zone(self, zone: Zone) -> None:
        self._responder = Responder(zone)  # one reference: atomic for the UDP threads

    async def update(self, records: Iterable[Record]) -> Zone:
        """Serve these records (from plan()); rebuilds only when they changed. The build
        runs in a thread so the event loop keeps going for big zones."""
        wanted = frozenset(records)
        async with self._updating:  # one build at a time, so serials only grow
            if wanted == self._records:
                return self.zone
            serial = next_serial(self.zone.serial, time.time())
            zone = await asyncio.to_thread(build_zone, wanted, self.config, serial)
            self._records = wanted
            self.set_zone(zone)
        for problem in zone.problems:
            log.warning("dns: zone problem", problem=problem)
        return zone

    def stats(self) -> DnsStats:
        totals = [0] * _SLOTS
        udp = 0
        for counts in self._udp_counts:
            udp += sum(counts)
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
        tcp = sum(self._tcp_counts)
        totals = [a + b for a, b in zip(totals, self._tcp_counts, strict=True)]
        by_name = {RCODE_NAMES.get(rc, str(rc)): totals[rc] for rc in (*range(17), DROPPED)}
        zone = self.zone
        return DnsStats(
            serial=zone.serial,
            record_count=zone.record_count,
            zones=tuple(".".join(label.decode() for label in apex) for apex in zone.apexes),
            queries={k: v for k, v in by_name.items() if v or k in RCODE_NAMES.values()},
            udp=udp,
            tcp=tcp,
            problems=zone.problems,
            outside=zone.outside,
            listening=tuple(f"{h}:{p}" for h, p in self.addresses),
        )

    # --- sockets ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every configured address, UDP and TCP on the same port (port 0: the
        kernel picks one). OSError, naming the address, if one cannot be bound."""
        self._stopping = False
        try:
            for host, port in self.config.listen:
                await self._listen(host, port)
        except OSError:
            await self.stop()
            raise

    async def _listen(self, host: str, port: int) -> None:
        family = socket_family_of(host)
        for attempt in range(20):
            udp = [self._udp_socket(family, host, port, self.workers > 1)]
            bound = udp[0].getsockname()[1]
            try:
                server = await asyncio.start_server(
                    self._tcp_client,
                    sock=self._tcp_socket(family, host, bound),
                )
            except OSError as e:
                udp[0].close()
                if port == 0 and attempt < 19:
                    continue  # that ephemeral port is taken for TCP: pick another
                raise OSError(e.errno, f"cannot listen on {host}:{bound}/tcp: {e.strerror}") from e
            for _ in range(self.workers - 1):
                udp.append(self._udp_socket(family, host, bound, True))
            break
        self._tcp.append(server)
        self.addresses.append((host, bound))
        for sock in udp:
            counts = [0] * _SLOTS
            self._udp.append(sock)
            self._udp_counts.append(counts)
            thread = threading.Thread(
                target=self._udp_loop, args=(sock, counts), name=f"dns-udp-{host}:{bound}"
            )
            thread.daemon = True  # never hold the process up at exit
            thread.start()
            self._threads.append(thread)
        log.info("dns: listening", host=host, port=bound, udp_sockets=len(udp))

    @staticmethod
    def _udp_socket(family: int, host: str, port: int, reuse_port: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if reuse_port:  # several sockets on one port: the kernel spreads the flows
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot listen on {host}:{port}/udp: {e.strerror}") from e
        return sock

    @staticmethod
    def _tcp_socket(family: int, host: str, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _answer_udp(self, data: bytes) -> tuple[bytes | None, int]:
        try:
            return self._responder.reply(data, True)
        except Exception:  # a bug must cost one answer, never the server
            log.exception("dns: failed to answer a query", transport="udp")
            return None, SERVFAIL

    def _udp_loop(self, sock: socket.socket, counts: list[int]) -> None:
        if self.batched:
            try:
                batch.serve(
                    sock,
                    self._answer_udp,
                    lambda: self._responder.replies,
                    counts,
                    lambda: self._stopping,
                )
                return
            except Exception:  # keep answering, the slower way, rather than go silent
                log.exception("dns: batched UDP loop failed; continuing with recvfrom")
        recvfrom, sendto, answer = sock.recvfrom, sock.sendto, self._answer_udp
        while not self._stopping:
            try:
                data, peer = recvfrom(batch.SLOT)
            except OSError:
                continue  # ICMP errors and the like; stop() ends the loop
            if self._stopping:
                return
            reply, rcode = answer(data)
            counts[rcode] += 1
            if reply is not None:
                try:  # noqa: SIM105 - suppress() costs a context manager per packet
                    sendto(reply, peer)
                except OSError:
                    pass  # the peer is gone or its buffer is full; UDP clients retry

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tcp_writers) >= TCP_CLIENTS or self._stopping:
            writer.close()
            return
        self._tcp_writers.add(writer)
        counts = self._tcp_counts
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (length,) = struct.unpack(">H", head)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                try:
                    reply, rcode = self._responder.reply(data, False)
                except Exception:
                    log.exception("dns: failed to answer a query", transport="tcp")
                    reply, rcode = None, SERVFAIL
                counts[rcode] += 1
                if reply is None:
                    break
                writer.write(struct.pack(">H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass  # the client went away or idled out: RFC 7766 lets us close
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        self._stopping = True
        for server in self._tcp:
            server.close()
        # Idle clients would otherwise wait out their timeout; a connection accepted just
        # now has a handler task not yet started: let it run, see _stopping and close.
        for _ in range(3):
            for writer in list(self._tcp_writers):
                writer.close()
            await asyncio.sleep(0)
        for sock in self._udp:
            # Linux wakes the thread blocked in recvfrom, then says ENOTCONN for UDP
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        for sock in self._udp:
            sock.close()
        for server in self._tcp:
            await server.wait_closed()
        self._udp, self._threads, self._tcp, self.addresses = [], [], [], []

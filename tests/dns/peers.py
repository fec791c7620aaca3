"""Real DNS peers on loopback for the DNS suite: our server on its own event loop in a
thread, knotd as a child process, and kdig/dig as clients."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import DnsConfig
from appliance.dns.server import DnsServer
from appliance.dns.zone import build_zone, render_zonefile
from appliance.model import Record

T = TypeVar("T")


def free_port() -> int:
    """A port >= 10000 free on 127.0.0.1 for both UDP and TCP right now."""
    for _ in range(200):
        port = random.randrange(10000, 60000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


class OurServer:
    """A DnsServer on an event loop of its own, so tests can stay synchronous."""

    def __init__(
        self,
        config: DnsConfig,
        records: Iterable[Record],
        batched: bool | None = None,
        workers: int = 1,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = DnsServer(config, workers=workers, batched=batched)
        self.call(self.server.start())
        self.call(self.server.update(records))
        self.port = self.server.addresses[0][1]
        self.serial = self.server.zone.serial

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@contextmanager
def our_server(
    config: DnsConfig, records: Iterable[Record], batched: bool | None = None
) -> Iterator[OurServer]:
    server = OurServer(config, records, batched)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def knotd(
    workdir: Path, config: DnsConfig, records: Iterable[Record], serial: int = 1
) -> Iterator[int]:
    """knotd serving the same records (rendered as zone files); yields its port."""
    zone = build_zone(records, config, serial)
    port = free_port()
    zones_conf = []
    for apex in config.zones:
        (workdir / f"{apex}.zone").write_text(render_zonefile(zone, apex))
        zones_conf.append(
            f'  - domain: {apex}\n    file: "{workdir}/{apex}.zone"\n'
            "    journal-content: none\n    zonefile-sync: -1\n"
        )
    conf = workdir / "knot.conf"
    conf.write_text(
        f'server:\n    rundir: "{workdir}"\n    listen: 127.0.0.1@{port}\n'
        "    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
        f'database:\n    storage: "{workdir}"\n'
        "log:\n  - target: stderr\n    any: error\n"
        "zone:\n" + "".join(zones_conf)
    )
    log = (workdir / "knotd.log").open("w")
    proc = subprocess.Popen(["knotd", "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        apex = config.zones[0]
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"knotd exited: {(workdir / 'knotd.log').read_text()}")
            if kdig(port, [(apex, "SOA")])[0]["RCODE"] == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("knotd did not answer")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def kdig(port: int, questions: list[tuple[str, str]], *options: str) -> list[dict[str, Any]]:
    """Ask kdig (one process, many questions) and return its RFC 8427 JSON replies in the
    order of `questions` (matched by the echoed name and type, which must be unique; kdig
    lower-cases names, so use dig to see case echoed); no reply: {"RCODE": None}."""
    args = ["kdig", "-p", str(port), "@127.0.0.1", "+json", "+norec", "+noidn", "+time=2"]
    args.append("+retry=1")
    args += list(options)
    for name, rtype in questions:
        args += [name, rtype]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False).stdout
    decoder = json.JSONDecoder()
    by_question: dict[tuple[str, str], dict[str, Any]] = {}
    i = 0
    while (i := out.find("{", i)) >= 0:
        obj, i = decoder.raw_decode(out, i)
        by_question[(obj.get("QNAME", "").lower(), obj.get("QTYPEname", ""))] = obj
    return [
        by_question.get((name.lower() + ".", rtype), {"RCODE": None}) for name, rtype in questions
    ]


def dig(port: int, name: str, rtype: str, *options: str) -> str:
    args = ["dig", "-p", str(port), "@127.0.0.1", "+norec", "+time=2", "+tries=2", name, rtype]
    return subprocess.run(
        [*args, *options], capture_output=True, text=True, timeout=30, check=False
    ).stdout

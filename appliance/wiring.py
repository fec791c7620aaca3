"""The program, wired: the real adapters a config asks for, the daemon's loop around them
and the web in front, run until a signal. `appliance run` calls `serve`; nothing else
imports this module (`make lint` holds that), so the loop and the adapters never learn
which concrete parts they were given.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from appliance.config import Config, DnsConfig, load_config
from appliance.daemon import snapshot
from appliance.daemon.loop import Daemon
from appliance.daemon.notify import Notifier
from appliance.daemon.parts import (
    DnsPart,
    FilesFeed,
    HealthPart,
    KubeFeed,
    Parts,
    SourcePart,
    SpeakerPart,
)
from appliance.daemon.resign import Resignations
from appliance.daemon.statestore import AllocationStore, SnapshotStore
from appliance.dataplane.backends import make_backend
from appliance.dns.server import DnsServer
from appliance.ha.process import SpeakerProcess
from appliance.health.checker import HealthChecker
from appliance.health.verdict import Outcome
from appliance.kube.api import KubeConfigError
from appliance.kube.link import KubeLink
from appliance.web.app import StateHolder, WebServer, create_app
from appliance.web.metrics import make_registry

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

log = structlog.get_logger("appliance.daemon")


def make_source(config: Config) -> SourcePart:
    """Raises KubeConfigError (one line) when the API settings are unusable."""
    if config.cluster.manifests:
        return FilesFeed(config.cluster.manifests)
    return KubeFeed(KubeLink.from_config(config, socket.gethostname()))


def make_dns(config: DnsConfig) -> DnsPart | None:
    return DnsServer(config) if config.enabled else None


class CountingChecker(HealthChecker):
    """The health checker, counting every result by outcome for /metrics (the checker
    itself counts only checks and verdict changes)."""

    def __init__(self, max_in_flight: int) -> None:
        super().__init__(max_in_flight=max_in_flight)
        self.results: Counter[str] = Counter()

    def record(self, key: tuple[str, str], gen: int, outcome: Outcome) -> None:
        self.results["ok" if outcome.ok else "failed"] += 1
        super().record(key, gen, outcome)


def make_parts(config: Config) -> Parts:
    """The real adapters the config asks for. Nothing is started here."""
    speaker: SpeakerPart | None = None
    if config.ha.interface is not None and config.ha.instances:
        # A process of its own, so no work of the loop's can delay an advert; and no
        # master without a plan: a host that has not synced must not take VIPs away.
        speaker = SpeakerProcess(config.ha, pools=config.pools, wait_for_plan=True)
    health: HealthPart | None = None
    if config.health.enabled:
        health = CountingChecker(config.health.max_in_flight)
    return Parts(
        source=make_source(config),
        dataplane=make_backend(config),
        speaker=speaker,
        dns=make_dns(config.dns),
        health=health,
    )


def make_daemon(config: Config, config_path: str, parts: Parts) -> Daemon:
    return Daemon(
        config,
        parts,
        load_config=lambda: load_config(config_path),
        make_source=make_source,
        make_dns=make_dns,
        notifier=Notifier(),
        store=AllocationStore.in_dir(config.state_dir),
        resignations=Resignations.in_dir(config.state_dir, [i.name for i in config.ha.instances]),
        snapshots=SnapshotStore.in_dir(config.state_dir),
    )


async def serve(config: Config, config_path: str) -> int:
    """Run the daemon with the real adapters and the web until SIGTERM/SIGINT."""
    try:
        parts = make_parts(config)
    except KubeConfigError as e:
        log.error("cannot start", error=str(e))
        return EXIT_BAD_INPUT
    daemon = make_daemon(config, config_path, parts)
    holder = StateHolder()
    registry, histogram = make_registry(holder.get)
    snapshots = snapshot.Snapshots(daemon)
    daemon.on_tick.append(lambda: holder.set(snapshots.build()))
    daemon.on_sync.append(lambda record: histogram.observe(record.seconds))
    host, port = config.web.listen
    try:
        app = create_app(holder, registry, config.web, _actions(daemon))
        web = WebServer(app, host, port)
    except OSError as e:
        log.error("cannot start the web", listen=f"{host}:{port}", error=e.strerror or str(e))
        return EXIT_FAILED
    web.start()
    log.info("web", url=f"http://{host}:{web.address[1]}/")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    try:
        await daemon.run()
    except OSError as e:  # a port taken, an interface missing: one line, not a trace
        log.error("cannot run", error=str(e))
        return EXIT_FAILED
    finally:
        await asyncio.to_thread(web.stop)
    return 0


def _actions(daemon: Daemon) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """The web's changes, run on the daemon's loop (the web thread never touches it)."""
    loop = asyncio.get_running_loop()

    def act(what: str, body: dict[str, Any]) -> dict[str, Any]:
        instance, seconds = body.get("instance"), body.get("for_seconds")
        if instance is not None and not isinstance(instance, str):
            raise ValueError("instance: a name or null (every instance)")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float)
        ):
            raise ValueError("for_seconds: a number of seconds or null (until resumed)")

        async def run() -> dict[str, Any]:
            if what == "resign":
                names = daemon.resign(instance, seconds)
            else:
                names = daemon.resume(instance)
            return {"instances": names, "resigned": daemon.resignations.listing()}

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)

    return act

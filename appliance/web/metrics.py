"""/metrics: `appliance_<subsystem>_<name>_<unit>`, `_total` only on counters.

Everything but the sync histogram is read from the same snapshot the page shows, at
scrape time, so the numbers on the page and in Prometheus never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from appliance.status import Status

SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VRRP_STATES = ("initialize", "backup", "master", "fault")
VERDICTS = ("up", "down", "unknown", "unchecked")


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Status]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        for part in (_plan, _dataplane, _sync, _vrrp, _dns, _health, _saved_state):
            yield from part(s)


def _plan(s: Status) -> Iterator[Metric]:
    yield _gauge("appliance_daemon_ready", "1 after the first sync", 1 if s.ready else 0)
    yield _gauge("appliance_plan_vips", "VIPs in the plan", len(s.vips))
    yield _gauge("appliance_plan_services", "LoadBalancer Services served", len(s.services))
    yield _gauge(
        "appliance_plan_virtual_services", "virtual services (VIP:port)", len(s.virtual_services)
    )
    yield _gauge("appliance_plan_refused_objects", "objects refused", len(s.refused))
    yield _gauge("appliance_plan_problems", "problems with accepted objects", len(s.problems))


def _dataplane(s: Status) -> Iterator[Metric]:
    ports = s.virtual_services
    rs = GaugeMetricFamily(
        "appliance_dataplane_real_servers",
        "real servers (node behind a virtual service) by health",
        labels=["health"],
    )
    counts = dict.fromkeys(VERDICTS, 0)
    for p in ports:
        for r in p.real_servers:
            counts[r.health] = counts.get(r.health, 0) + 1
    for verdict, n in counts.items():
        rs.add_metric([verdict], n)
    yield rs
    # One series per real server of the plan (as IPVS exporters do): bounded by the
    # plan, not by traffic. A real server not read yet has no sample rather than a 0.
    conns = GaugeMetricFamily(
        "appliance_dataplane_active_connections",
        "active connections per real server, read from the kernel every few seconds",
        labels=["vip", "port", "protocol", "real_server"],
    )
    for p in ports:
        for r in p.real_servers:
            if r.active_connections is not None:
                conns.add_metric([p.vip, str(p.port), p.protocol, r.address], r.active_connections)
    yield conns


def _sync(s: Status) -> Iterator[Metric]:
    yield _gauge(
        "appliance_sync_last_timestamp_seconds",
        "when the last sync started",
        s.sync.time if s.sync else 0,
    )
    runs = CounterMetricFamily("appliance_sync_runs", "syncs by result", labels=["result"])
    for result in ("ok", "error"):
        runs.add_metric([result], s.counters.syncs.get(result, 0))
    yield runs
    reloads = CounterMetricFamily(
        "appliance_config_reloads", "SIGHUP reloads by result", labels=["result"]
    )
    for result in ("ok", "refused"):
        reloads.add_metric([result], s.counters.reloads.get(result, 0))
    yield reloads


def _vrrp(s: Status) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "appliance_vrrp_state",
        "1 for the state each instance is in",
        labels=["instance", "state"],
    )
    for i in s.vrrp:
        for name in VRRP_STATES:
            state.add_metric([i.instance, name], 1 if i.state == name else 0)
    yield state
    priority = GaugeMetricFamily(
        "appliance_vrrp_priority",
        "the priority each instance advertises (its configured one, less tracking)",
        labels=["instance"],
    )
    for i in s.vrrp:
        priority.add_metric([i.instance], i.priority)
    yield priority
    tracked = GaugeMetricFamily(
        "appliance_vrrp_track_failing",
        "1 while a tracked cause (ha.track) fails: dataplane, source, interface <name>",
        labels=["cause"],
    )
    for t in s.tracking:
        tracked.add_metric([t.cause], 1 if t.failing else 0)
    yield tracked
    yield from _vrrp_counts(s)


def _vrrp_counts(s: Status) -> Iterator[Metric]:
    resigned = GaugeMetricFamily(
        "appliance_vrrp_resigned",
        "1 while the operator holds the instance back (appliance ha resign)",
        labels=["instance"],
    )
    held = {r.instance for r in s.resigned}
    for i in s.vrrp:
        resigned.add_metric([i.instance], 1 if i.instance in held else 0)
    yield resigned
    dropped = CounterMetricFamily(
        "appliance_vrrp_adverts_dropped",
        "adverts dropped by reason (not_a_peer: a source outside the instance's peers)",
        labels=["instance", "reason"],
    )
    for i in s.vrrp:
        for reason, n in sorted(i.dropped.items()):
            dropped.add_metric([i.instance, reason], n)
    yield dropped
    transitions = CounterMetricFamily(
        "appliance_vrrp_transitions", "VRRP state changes", labels=["instance", "state"]
    )
    for t in s.counters.vrrp_transitions:
        transitions.add_metric([t.instance, t.state], t.count)
    yield transitions
    yield CounterMetricFamily(
        "appliance_vrrp_garp_frames",
        "gratuitous ARPs and unsolicited NAs sent",
        value=s.counters.garps_sent,
    )


def _dns(s: Status) -> Iterator[Metric]:
    queries = CounterMetricFamily("appliance_dns_queries", "DNS queries by rcode", labels=["rcode"])
    for rcode, n in sorted(s.dns.queries.items() if s.dns else ()):
        queries.add_metric([rcode], n)
    yield queries
    yield _gauge("appliance_dns_records", "records in the zone", s.dns.records if s.dns else 0)


def _health(s: Status) -> Iterator[Metric]:
    checks = CounterMetricFamily(
        "appliance_health_checks", "health check results", labels=["result"]
    )
    for result in ("ok", "failed"):
        checks.add_metric([result], s.counters.health_checks.get(result, 0))
    yield checks
    targets = GaugeMetricFamily(
        "appliance_health_targets", "health check targets by verdict", labels=["verdict"]
    )
    verdicts = dict.fromkeys(VERDICTS[:3], 0)
    for t in s.health:
        verdicts[t.verdict] = verdicts.get(t.verdict, 0) + 1
    for verdict, n in verdicts.items():
        targets.add_metric([verdict], n)
    yield targets


def _saved_state(s: Status) -> Iterator[Metric]:
    saved, writer = s.source.saved_plan, s.source.saved_state
    yield _gauge(
        "appliance_plan_from_saved_state",
        "1 while the plan comes from the saved snapshot (the source has not answered)",
        1 if saved else 0,
    )
    yield _gauge(
        "appliance_plan_saved_timestamp_seconds",
        "when the snapshot being served was saved; 0 when the plan is live",
        saved.saved_at if saved else 0,
    )
    writes = CounterMetricFamily(
        "appliance_state_snapshot_writes",
        "writes of the last cluster snapshot (last-state.json) by result",
        labels=["result"],
    )
    for result in ("ok", "skipped", "failed"):
        writes.add_metric([result], writer.writes.get(result, 0) if writer else 0)
    yield writes
    yield _gauge(
        "appliance_state_snapshot_write_seconds",
        "how long the last snapshot write took (encode, write, fsync)",
        (writer.last_write_seconds if writer else None) or 0,
    )
    yield CounterMetricFamily(
        "appliance_cluster_watch_restarts",
        "cluster source restarts and relists",
        value=s.counters.source_restarts + s.source.relists,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def make_registry(snapshot: Callable[[], Status]) -> tuple[CollectorRegistry, Histogram]:
    """A registry of our own (no process-global state) and the sync duration histogram."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    histogram = Histogram(
        "appliance_sync_duration_seconds",
        "plan + apply duration",
        buckets=SYNC_BUCKETS,
        registry=registry,
    )
    return registry, histogram

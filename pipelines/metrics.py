"""Prometheus metrics of an audit database: the families, their collector and HTTP server.

The names are a contract: alerting rules are written against them (`SAMPLE_NAMES` lists
every sample name exposed). The figures are database totals read by
connectors.duckdb_metrics.read_metrics, not counts kept by one process, so a restarted
exporter shows the same values and counters only go down when the database does (a batch
load replaces its tables; Prometheus' rate() treats that as a counter reset).

Example:
    collector = AuditCollector()
    collector.update(read_metrics(con))
    server = serve_metrics("127.0.0.1", 9481, collector)   # GET /metrics
    ...
    server.close()

Exposed (abridged): removal_audit_unresolved_requests{authority="Roskomnadzor",
category="DRUGS",platform="twitter"} 174.0
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from typing import Literal, NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.duckdb_metrics import MetricsState

PREFIX = "removal_audit_"
REQUEST_LABELS = ("category", "platform", "authority")
BACKLOG_STATUSES = ("open", "overdue", "declined")


class Family(NamedTuple):
    name: str  # without the prefix, and without _total for a counter
    kind: Literal["gauge", "counter"]
    labels: tuple[str, ...]
    doc: str

    @property
    def sample_name(self) -> str:
        full = PREFIX + self.name
        return f"{full}_total" if self.kind == "counter" else full


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "backlog_requests",
            "gauge",
            (*REQUEST_LABELS, "status"),
            "Requests with this status (open, overdue, declined) as of the as-of time.",
        ),
        Family(
            "unresolved_requests",
            "gauge",
            REQUEST_LABELS,
            "Unresolved requests (open + overdue + declined) as of the as-of time.",
        ),
        Family(
            "requests_issued",
            "counter",
            REQUEST_LABELS,
            "Requests issued at or before the as-of time.",
        ),
        Family(
            "sla_breaches",
            "counter",
            REQUEST_LABELS,
            "Requests unresolved when their deadline passed, breached at or before the as-of time.",
        ),
        Family(
            "deadlines_due",
            "counter",
            REQUEST_LABELS,
            "Requests whose deadline passed by the as-of time and that were not withdrawn "
            "before it (sla_breaches / deadlines_due is the breach rate).",
        ),
        Family("records_in", "counter", (), "Input records the database accounts for."),
        Family("records_landed", "counter", (), "Distinct events landed."),
        Family("records_duplicate", "counter", (), "Repeated deliveries of landed events."),
        Family(
            "records_quarantined",
            "counter",
            ("reason",),
            "Records refused and kept in quarantine, by reason code.",
        ),
        Family(
            "consumer_lag_records",
            "gauge",
            ("topic", "partition"),
            "Records between the next offset the streaming job would read and the end of "
            "the partition.",
        ),
        Family(
            "last_landed_timestamp_seconds",
            "gauge",
            (),
            "Wall-clock time of the last landed batch or load (unix seconds).",
        ),
        Family(
            "data_horizon_timestamp_seconds",
            "gauge",
            (),
            "Latest event time landed (unix seconds).",
        ),
        Family(
            "as_of_timestamp_seconds",
            "gauge",
            (),
            "Event time the backlog, breach and deadline figures are as of (unix seconds).",
        ),
        Family(
            "alerts_firing",
            "gauge",
            ("rule", "severity"),
            "Alert episodes firing, by rule and severity.",
        ),
        Family("batches_held", "gauge", (), "Batches the data-quality gate holds back."),
        Family(
            "alert_notifications_pending",
            "gauge",
            ("sink",),
            "Alert notifications not delivered yet, by sink.",
        ),
        Family("build_info", "gauge", ("version",), "The removal-audit version; always 1."),
    )
}

SAMPLE_NAMES: frozenset[str] = frozenset(f.sample_name for f in FAMILIES.values())


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    f = FAMILIES[name]
    kind = GaugeMetricFamily if f.kind == "gauge" else CounterMetricFamily
    return kind(PREFIX + f.name, f.doc, labels=list(f.labels))


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def state_families(state: MetricsState) -> Iterator[Metric]:
    """The metric families of one state, build_info left out. Timestamps the database does
    not have (no events, nothing landed) are left out rather than shown as 1970."""
    families = {name: _family(name) for name in FAMILIES if name != "build_info"}
    for r in state.requests:
        labels = [r.category, r.platform, r.authority]
        for status, count in zip(BACKLOG_STATUSES, (r.open, r.overdue, r.declined), strict=True):
            families["backlog_requests"].add_metric([*labels, status], count)
        families["unresolved_requests"].add_metric(labels, r.unresolved)
        families["requests_issued"].add_metric(labels, r.issued)
        families["sla_breaches"].add_metric(labels, r.breaches)
        families["deadlines_due"].add_metric(labels, r.deadlines_due)
    families["records_in"].add_metric([], state.records_in)
    families["records_landed"].add_metric([], state.landed)
    families["records_duplicate"].add_metric([], state.duplicates)
    for reason, records in state.quarantined:
        families["records_quarantined"].add_metric([reason], records)
    for lag in state.consumer_lag:
        families["consumer_lag_records"].add_metric([lag.topic, str(lag.partition)], lag.records)
    for name, moment in (
        ("last_landed_timestamp_seconds", state.last_landed_at),
        ("data_horizon_timestamp_seconds", state.horizon),
        ("as_of_timestamp_seconds", state.as_of),
    ):
        seconds = _seconds(moment)
        if seconds is not None:
            families[name].add_metric([], seconds)
    for alert in state.alerts_firing:
        families["alerts_firing"].add_metric([alert.rule, alert.severity], alert.firing)
    families["batches_held"].add_metric([], state.batches_held)
    for sink, pending in state.notifications_pending:
        families["alert_notifications_pending"].add_metric([sink], pending)
    # A family with no sample (no lag measured, nothing landed) is left out of the exposition.
    yield from (f for f in families.values() if f.samples)


class AuditCollector(Collector):
    """A prometheus_client collector serving the latest MetricsState, with its own registry.

    `update` replaces the state (any thread); a scrape sees one whole state, never a mix.
    Before the first update only build_info is exposed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: MetricsState | None = None
        self._version = version("removal-audit")
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def update(self, state: MetricsState) -> None:
        with self._lock:
            self._state = state

    @property
    def state(self) -> MetricsState | None:
        with self._lock:
            return self._state

    def describe(self) -> Iterator[Metric]:
        yield from (_family(name) for name in FAMILIES)

    def collect(self) -> Iterator[Metric]:
        info = _family("build_info")
        info.add_metric([self._version], 1)
        yield info
        state = self.state
        if state is not None:
            yield from state_families(state)


@dataclass(frozen=True)
class MetricsServer:
    """The HTTP server of `serve_metrics`, running on a daemon thread until `close()`."""

    host: str
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The bound port (the one the system chose when 0 was asked)."""
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve_metrics(host: str, port: int, collector: AuditCollector) -> MetricsServer:
    """Serve `collector`'s registry at http://host:port/metrics (and at /), bound to `host`
    only (e.g. 127.0.0.1; 0.0.0.0 for every interface). Port 0: the system picks one.
    Raises OSError when the address is in use or cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=collector.registry)
    return MetricsServer(host, server, thread)

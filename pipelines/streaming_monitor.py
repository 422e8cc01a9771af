"""Monitoring inside the streaming job: the Prometheus collector, refreshed after each
snapshot publication (alert notifications are delivered by connectors.alert_sinks'
DeliveryThread).

The job's SDK worker runs in the job's own process (Prism, LOOPBACK), so the collector the
metrics server serves and the one the writer refreshes are the same object, found by the
database path (`collector_for`); the writer's configuration only carries picklable
settings.

Example:
    server = serve_metrics("127.0.0.1", 9464, collector_for(database))
    WriterConfig(..., on_published=MetricsRefresh(database, consumer_config))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from connectors.duckdb_metrics import read_metrics
from connectors.kafka_lag import ConsumerLagError, consumer_lag
from pipelines import process_state
from pipelines.metrics import AuditCollector

log = logging.getLogger(__name__)


def collector_for(database: Path) -> AuditCollector:
    """The process's collector of `database`'s metrics."""
    return process_state.shared(f"metrics:{database.resolve()}", AuditCollector)


@dataclass(frozen=True)
class MetricsRefresh:
    """Called by the writer with its connection and the next offset to read per partition,
    after each snapshot publication: reads the figures and the consumer lag."""

    database: Path
    consumer_config: Mapping[str, Any] | None = field(default=None, repr=False)

    def __call__(
        self, con: duckdb.DuckDBPyConnection, next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        lag: dict[tuple[str, int], int] = {}
        if self.consumer_config is not None:
            try:
                lag = consumer_lag(self.consumer_config, next_offsets)
            except ConsumerLagError as error:
                log.warning("consumer lag not measured: %s", error)
        collector_for(self.database).update(read_metrics(con, lag=lag))

"""DuckDB: read the figures the Prometheus exporter publishes, as one plain `MetricsState`.

The SQL is in `sql/metrics/` (one statement per file). `read_metrics` runs on the streaming
writer's own connection (once per snapshot publication, from the writer thread) and on a
read-only auditor connection (`connect_auditor`, as `removal-audit monitor` does); it neither
writes nor begins a transaction. The result holds no DuckDB object, so it can be handed to
the HTTP server's threads as it is.

Example (the seed scenario):
    con = connect_auditor(Path("audit.duckdb"))
    state = read_metrics(con, as_of=datetime(2021, 3, 1, tzinfo=UTC))
    sum(f.unresolved for f in state.requests)      # -> 2862
    state.records_in, state.landed                 # -> (63281, 62672)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import duckdb

from connectors.errors import ReasonCode
from pipelines.resources import sql_dir


class LabelFigures(NamedTuple):
    """Request figures of one (category, platform, authority) as of `MetricsState.as_of`.

    Example: LabelFigures("DRUGS", "twitter", "Roskomnadzor", issued=2100, open=3,
    overdue=120, declined=51, deadlines_due=2080, breaches=640)."""

    category: str
    platform: str
    authority: str
    issued: int
    open: int
    overdue: int
    declined: int
    deadlines_due: int
    breaches: int

    @property
    def unresolved(self) -> int:
        """The regulator's "not deleted": open + overdue + declined."""
        return self.open + self.overdue + self.declined


class AlertsFiring(NamedTuple):
    rule: str
    severity: str
    firing: int


class PartitionLag(NamedTuple):
    topic: str
    partition: int
    records: int


@dataclass(frozen=True)
class MetricsState:
    """The figures of one read, every timestamp timezone-aware.

    as_of: the event time the request figures are as of (the data horizon unless asked;
    None for a database with no events). quarantined: (reason_code, records), every known
    reason code included. notifications_pending: (sink, pending). consumer_lag: empty unless
    the caller measured it (streaming only)."""

    as_of: datetime | None
    horizon: datetime | None
    last_landed_at: datetime | None
    requests: tuple[LabelFigures, ...]
    records_in: int
    landed: int
    duplicates: int
    quarantined: tuple[tuple[str, int], ...]
    alerts_firing: tuple[AlertsFiring, ...]
    batches_held: int
    notifications_pending: tuple[tuple[str, int], ...]
    consumer_lag: tuple[PartitionLag, ...]


@functools.cache
def metrics_sql(name: str) -> str:
    """The statement of `sql/metrics/<name>.sql`, without a trailing semicolon."""
    path = sql_dir() / "metrics" / f"{name}.sql"
    return path.read_text(encoding="utf-8").rstrip().rstrip(";")


def _rows(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    return con.execute(metrics_sql(name), dict(params) if params else None).fetchall()


def _present_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    found = con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = current_schema()"
    ).fetchall()
    return {str(name) for (name,) in found}


def read_metrics(
    con: duckdb.DuckDBPyConnection,
    *,
    as_of: datetime | None = None,
    lag: Mapping[tuple[str, int], int] | None = None,
) -> MetricsState:
    """Read every figure of the metrics contract (pipelines/metrics.py) from `con`.

    as_of: the event time of the request, breach and alert figures (timezone-aware). None:
    request and breach figures as of the data horizon, alerts firing now (not resolved).
    lag: (Kafka topic, partition) -> records behind the end offset, as connectors.kafka_lag
    measures it; carried into the state as it is.
    """
    if as_of is not None and as_of.utcoffset() is None:
        raise ValueError(f"as_of must be timezone-aware, got {as_of!r}")
    # alerts, batch_holds and alert_notifications came later: a database (or an auditors'
    # snapshot) made before them is still read, those figures left out.
    present = _present_tables(con)
    records_in, landed, duplicates, last_landed_at, horizon = _rows(con, "records")[0]
    effective = as_of if as_of is not None else horizon
    requests: tuple[LabelFigures, ...] = ()
    if effective is not None:
        requests = tuple(
            LabelFigures(str(c), str(p), str(a), *map(int, figures))
            for c, p, a, *figures in _rows(con, "requests_by_labels", {"as_of": effective})
        )
    # Every reason code from the start, so that the first quarantined record of a kind shows
    # as an increase of a series rather than as a new series.
    quarantined = dict.fromkeys((code.value for code in ReasonCode), 0)
    quarantined.update({str(r): int(n) for r, n in _rows(con, "quarantine_by_reason")})
    alerts: tuple[AlertsFiring, ...] = ()
    if "alerts" in present:
        alerts = tuple(
            AlertsFiring(str(rule), str(severity), int(firing))
            for rule, severity, firing in _rows(con, "alerts_firing", {"as_of": as_of})
        )
    held = int(_rows(con, "batches_held")[0][0]) if "batch_holds" in present else 0
    pending: tuple[tuple[str, int], ...] = ()
    if "alert_notifications" in present:
        pending = tuple((str(s), int(n)) for s, n in _rows(con, "notifications_pending"))
    return MetricsState(
        as_of=effective,
        horizon=horizon,
        last_landed_at=last_landed_at,
        requests=requests,
        records_in=int(records_in),
        landed=int(landed),
        duplicates=int(duplicates),
        quarantined=tuple(sorted(quarantined.items())),
        alerts_firing=alerts,
        batches_held=held,
        notifications_pending=pending,
        consumer_lag=tuple(
            PartitionLag(topic, partition, int(records))
            for (topic, partition), records in sorted((lag or {}).items())
        ),
    )

"""DuckDB: apply the DDL and views from `sql/`, land a staged batch in one transaction.

A batch run audits the files it is given: each load replaces the audit tables with the
staged rows (so a rerun over the same files leaves identical tables), and with them
everything derived from them: the alert rules' episodes, tracks and checkpoints are
evaluated anew on what it lands, and `current_load` names it (`record_account` reads that).
History stays, each row naming its load: `load_ledger` (one row per distinct load, keyed by
a hash of its inputs), `batch_validations`, `batch_holds` and the notifications already
sent. The load refuses to commit unless every record in is accounted for: records_in =
landed + duplicates + quarantined.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import duckdb

from connectors.duckdb_alerts import forget_evaluations
from connectors.duckdb_quality import BATCH_HELD_RULE, BatchHeld, accepted
from connectors.origin import file_sources
from pipelines.resources import sql_dir

# Tables a batch load replaces, in load order, each with the columns it is stored by.
AUDIT_TABLES: dict[str, str] = {
    "request_events": "event_id",
    "action_events": "event_id",
    "requests": "request_id",
    "lifecycle_transitions": "request_id, seq",
    "sla_breaches": "request_id",
    "backlog_daily": "as_of, category, platform, authority",
    "quarantine": "quarantine_id",
    "duplicate_deliveries": "source_ref",
}


# Columns that say when (wall clock) or under which random id a run wrote a row, by table:
# two runs of the same audit differ in these only, so fingerprints leave them out.
RUN_CLOCK_COLUMNS: dict[str, tuple[str, ...]] = {
    "alerts": ("detected_at", "resolution_detected_at"),
    "alert_evaluations": ("evaluated_at",),
    "alert_notifications": ("created_at", "next_attempt_at", "delivered_at"),
    "batch_holds": ("validation_id", "held_at", "resolved_at"),
    "batch_ledger": ("committed_at",),
    "batch_validations": ("validation_id", "validated_at"),
    "current_load": ("landed_at",),
    "load_ledger": ("loaded_at",),
    "quarantine_forwarded": ("forwarded_at",),
    "stream_runs": ("started_at", "last_landed_at"),
}


class BatchGate(Protocol):
    """What a load needs of the data-quality gate (pipelines.quality_gate.QualityGate)."""

    def evaluate(self, con: duckdb.DuckDBPyConnection, scope: None) -> Any: ...

    def record(
        self,
        con: duckdb.DuckDBPyConnection,
        outcome: Any,
        *,
        path: str,
        batch_ids: Sequence[str],
        hold: bool,
    ) -> None: ...


class BatchAlerts(Protocol):
    """What a load needs of the alert monitor (pipelines.monitoring.AlertMonitor)."""

    def evaluate(self, con: duckdb.DuckDBPyConnection, *, run_id: str | None = None) -> Any: ...


class AccountError(RuntimeError):
    """The record account does not balance: a load that would lose records is refused."""


@dataclass(frozen=True)
class LoadReport:
    """What a load did. Example: LoadReport(database=Path("audit.duckdb"), run_id="9f2c...",
    records_in=70421, landed=69500, duplicates=901, quarantined=20, replayed=False)"""

    database: Path
    run_id: str
    records_in: int
    landed: int
    duplicates: int
    quarantined: int
    replayed: bool
    # What the data-quality gate said, for humans (e.g. "5 suites, 35 expectations passed").
    validation: str = "not validated"
    # What the alert rules said, e.g. "alerts through 2021-04-30: 7 fired, 7 resolved".
    alerts: str = "alerts not evaluated"

    @property
    def balanced(self) -> bool:
        return self.records_in == self.landed + self.duplicates + self.quarantined


def connect_writer(database: Path) -> duckdb.DuckDBPyConnection:
    """The single writer's connection, with the schema applied."""
    con = duckdb.connect(str(database))
    con.execute("SET TimeZone = 'UTC'")
    apply_schema(con)
    return con


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Run every DDL file, then every view file, in name order (one statement per file)."""
    for folder in ("ddl", "views"):
        for path in sorted((sql_dir() / folder).glob("*.sql")):
            con.execute(path.read_text(encoding="utf-8"))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_identity(inputs: Sequence[Path], policy_version: str) -> tuple[str, str]:
    """(run_id, inputs JSON): the same files, policy and pipeline version give the same id.
    Files are named as their records' positions name them (`origin.file_sources`)."""
    described = [
        {"file": name, "sha256": _file_digest(path)} for name, path in file_sources(inputs).items()
    ]
    inputs_json = json.dumps(described, sort_keys=True)
    basis = json.dumps([inputs_json, policy_version, version("removal-audit")])
    return hashlib.sha256(basis.encode()).hexdigest()[:32], inputs_json


def land_batch(
    database: Path,
    stage: Path,
    *,
    inputs: Sequence[Path],
    records_in: int,
    policy_version: str,
    policy_rows: Sequence[Mapping[str, Any]],
    gate: BatchGate | None = None,
    alerts: BatchAlerts | None = None,
) -> LoadReport:
    """Replace the audit tables with the Parquet files staged as `stage/<table>-*.parquet`.

    With a `gate`, a first load of these inputs is validated before it commits: a failure
    rolls it back, records the validation, holds the run and raises BatchHeld (unless an
    operator accepted the run: then it lands, its validation recorded). The alert rules'
    state of the replaced tables goes with them; with `alerts`, the rules are evaluated on
    what lands, in the same transaction (a replay too: the tables may have held another
    load since)."""
    run_id, inputs_json = run_identity(inputs, policy_version)
    con = connect_writer(database)
    try:
        con.begin()
        for table, order in AUDIT_TABLES.items():
            con.execute(f"DELETE FROM {table}")
            files = sorted(str(p) for p in stage.glob(f"{table}-*.parquet"))
            if files:
                con.execute(
                    f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?) ORDER BY {order}",
                    [files],
                )
        forget_evaluations(con, keep_rules=(BATCH_HELD_RULE,))  # held loads: batch_holds
        land_policy(con, policy_version, policy_rows)
        landed = _count(con, "request_events") + _count(con, "action_events")
        duplicates = _count(con, "duplicate_deliveries")
        quarantined = _count(con, "quarantine")
        report = LoadReport(database, run_id, records_in, landed, duplicates, quarantined, False)
        if not report.balanced:
            raise AccountError(
                f"records in {records_in} != landed {landed} + duplicates {duplicates} "
                f"+ quarantined {quarantined}; nothing was committed"
            )
        existing = con.execute("SELECT 1 FROM load_ledger WHERE run_id = ?", [run_id]).fetchone()
        validation = "not validated" if existing is None else "validated when first loaded"
        if existing is None and gate is not None:
            outcome = gate.evaluate(con, None)
            validation = outcome.summary()
            if not outcome.passed and not accepted(con, run_id):
                con.rollback()
                con.begin()
                gate.record(con, outcome, path="batch", batch_ids=[run_id], hold=True)
                con.commit()
                raise BatchHeld(run_id, outcome.describe())
            gate.record(con, outcome, path="batch", batch_ids=[run_id], hold=False)
        alerted = "alerts not evaluated"
        if alerts is not None:
            alerted = alerts.evaluate(con, run_id=run_id).describe()
        if existing is None:
            con.execute(
                "INSERT INTO load_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    inputs_json,
                    policy_version,
                    version("removal-audit"),
                    records_in,
                    landed,
                    duplicates,
                    quarantined,
                    datetime.now(UTC),
                ],
            )
        con.execute("DELETE FROM current_load")
        con.execute("INSERT INTO current_load VALUES (?, ?)", [run_id, datetime.now(UTC)])
        con.commit()
        return LoadReport(
            database,
            run_id,
            records_in,
            landed,
            duplicates,
            quarantined,
            existing is not None,
            validation,
            alerted,
        )
    except BatchHeld:
        raise  # its own transaction committed the hold
    except BaseException:
        con.rollback()
        raise
    finally:
        con.close()


def land_policy(
    con: duckdb.DuckDBPyConnection, policy_version: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    con.execute("DELETE FROM sla_policy WHERE policy_version = ?", [policy_version])
    for row in rows:
        con.execute(
            "INSERT INTO sla_policy BY NAME SELECT * FROM (SELECT "
            + ", ".join(f"${k} AS {k}" for k in row)
            + ")",
            dict(row),
        )


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def table_fingerprints(
    con: duckdb.DuckDBPyConnection, leave_out: frozenset[str] = frozenset()
) -> dict[str, tuple[int, str]]:
    """Every base table's (row count, md5 of its rows in a canonical order): equal
    fingerprints mean equal content, whatever order the rows were written in, and whenever
    it was written: RUN_CLOCK_COLUMNS are not hashed, so two runs of the same audit give
    the same fingerprints. Columns named in `leave_out` are not hashed either (e.g.
    provenance, which differs between file and Kafka runs of the same events)."""
    tables = [
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY table_name"
        ).fetchall()
    ]
    out: dict[str, tuple[int, str]] = {}
    for table in tables:
        columns = [
            name
            for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index",
                [table],
            ).fetchall()
            if name not in leave_out and name not in RUN_CLOCK_COLUMNS.get(table, ())
        ]
        row: Any = con.execute(
            f"SELECT count(*), coalesce(md5(string_agg(CAST(t AS VARCHAR), chr(10) "
            f"ORDER BY CAST(t AS VARCHAR))), '') FROM (SELECT {', '.join(columns)} "
            f"FROM {table}) AS t"
        ).fetchone()
        out[table] = (int(row[0]), str(row[1]))
    return out

"""The data-quality gate's DuckDB side: which rows a validation covers, the rows fetched as
a DataFrame, and the record of what was validated, held, released or accepted, and the
alert a hold raises.

A validation covers either every row (`scope=None`) or the rows of some landed batches,
named per table by key (`{"requests": ["R1", ...], "request_events": [...], ...}`); the
suite queries in `expectations/*.sql` read that scope from the temporary table
`validation_scope` and the variable `validate_all`.

Example:
    set_scope(con, {"requests": ["RKN-2017-000001"]})
    frame = fetch_frame(con, suite.query, suite.columns)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from connectors import duckdb_alerts as alerts

HELD, RELEASED, ACCEPTED = "HELD", "RELEASED", "ACCEPTED"
BATCH_HELD_RULE = "BatchHeld"
BATCH_HELD_RUNBOOK = (
    "A landed batch failed its data-quality suites and is not published to auditors. "
    'Review: removal-audit sql "SELECT * FROM batch_validations WHERE NOT success" '
    "(failures lists the expectation, the unexpected count and sample keys). Fix the cause "
    "and run `removal-audit validate` (a pass releases the hold), or accept it with "
    "`removal-audit validate --accept BATCH_ID --note WHY`."
)


class BatchHeld(RuntimeError):
    """The data-quality gate held a batch load: nothing of it was published."""

    def __init__(self, batch_id: str, report: str) -> None:
        super().__init__(
            f"batch {batch_id} held by the data-quality gate; the previous tables are "
            f"unchanged.\n{report}\nReview it in batch_validations; after a fix run the "
            f"load again, or accept it: removal-audit validate --accept {batch_id} --note WHY "
            f"(then run the load again)."
        )
        self.batch_id = batch_id


@dataclass(frozen=True)
class Hold:
    batch_id: str
    path: str
    validation_id: str
    failed_suites: str
    held_at: datetime
    status: str


def set_scope(con: duckdb.DuckDBPyConnection, scope: Mapping[str, Sequence[str]] | None) -> None:
    """Point the suite queries at every row (None) or at these keys per table."""
    con.execute(
        "CREATE TEMP TABLE IF NOT EXISTS validation_scope (table_name VARCHAR, key VARCHAR)"
    )
    con.execute("DELETE FROM validation_scope")
    con.execute("SET VARIABLE validate_all = ?", [scope is None])
    if not scope:
        return
    names: list[str] = []
    keys: list[str] = []
    for table, table_keys in scope.items():
        names.extend([table] * len(table_keys))
        keys.extend(table_keys)
    rows = pa.table(
        {"table_name": pa.array(names, pa.string()), "key": pa.array(keys, pa.string())}
    )
    con.register("_validation_scope_rows", rows)
    try:
        con.execute(
            "INSERT INTO validation_scope SELECT table_name, key FROM _validation_scope_rows"
        )
    finally:
        con.unregister("_validation_scope_rows")


def fetch_frame(
    con: duckdb.DuckDBPyConnection, query: str, columns: Sequence[str] | None = None
) -> Any:
    """The query's rows as a pandas DataFrame (through Arrow: DuckDB's own pandas path warns
    under pandas 3): every column, or only those of `columns` it has (in its order; DuckDB
    then computes no other). A named column the query lacks is left to the expectation
    that names it to report."""
    relation = con.sql(query)
    if columns is not None:
        wanted = set(columns)
        relation = relation.select(
            *(duckdb.ColumnExpression(c) for c in relation.columns if c in wanted)
        )
    return relation.to_arrow_table().to_pandas()


def record_validation(
    con: duckdb.DuckDBPyConnection,
    *,
    validation_id: str,
    path: str,
    scope: str,
    batch_ids: Sequence[str],
    results: Sequence[Any],
) -> None:
    """One batch_validations row per suite result (pipelines.quality.SuiteResult)."""
    now = datetime.now(UTC)
    for result in results:
        con.execute(
            "INSERT INTO batch_validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                validation_id,
                result.suite,
                path,
                scope,
                json.dumps(list(batch_ids)),
                result.rows,
                result.evaluated,
                len(result.failures),
                result.success,
                json.dumps([f.as_json() for f in result.failures], default=str),
                now,
            ],
        )


def open_holds(con: duckdb.DuckDBPyConnection) -> list[Hold]:
    rows = con.execute(
        "SELECT batch_id, path, validation_id, failed_suites, held_at, status "
        "FROM batch_holds WHERE status = ? ORDER BY held_at, batch_id",
        [HELD],
    ).fetchall()
    return [Hold(*row) for row in rows]


def hold(
    con: duckdb.DuckDBPyConnection,
    *,
    batch_ids: Sequence[str],
    path: str,
    validation_id: str,
    failed_suites: Sequence[str],
    evidence: Mapping[str, Any],
    sinks: Sequence[str] = (),
    run_id: str | None = None,
) -> None:
    """Hold the batches (a batch already held keeps its first hold) and raise the BatchHeld
    alert for the path unless it is already firing; its notifications belong to the batch
    load `run_id` (None: not a batch load)."""
    now = datetime.now(UTC)
    for batch_id in batch_ids:
        con.execute(
            "INSERT INTO batch_holds VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) "
            "ON CONFLICT (batch_id) DO NOTHING",
            [batch_id, path, validation_id, ",".join(failed_suites), now, HELD],
        )
    labels = json.dumps({"path": path}, sort_keys=True)
    if alerts.firing(con, BATCH_HELD_RULE, labels):
        return
    alerts.fire(
        con,
        alerts.AlertRecord(
            f"{BATCH_HELD_RULE}:{path}:{validation_id}",
            BATCH_HELD_RULE,
            "critical",
            labels,
            f"{len(batch_ids)} {path} batch(es) held: suites {', '.join(failed_suites)} failed",
            evidence,
            BATCH_HELD_RUNBOOK,
            now,
        ),
        now=now,
        sinks=sinks,
        run_id=run_id,
    )


def release_holds(
    con: duckdb.DuckDBPyConnection, validation_id: str, run_id: str | None = None
) -> int:
    """A validation of every row passed: release every hold and resolve the alerts (their
    notifications belong to the batch load `run_id`, when one validated)."""
    now = datetime.now(UTC)
    held = len(open_holds(con))
    con.execute(
        "UPDATE batch_holds SET status = ?, resolved_at = ?, resolution = ? WHERE status = ?",
        [RELEASED, now, validation_id, HELD],
    )
    resolve_alerts(con, now, run_id)
    return held


def accept(con: duckdb.DuckDBPyConnection, batch_id: str, note: str) -> Hold:
    """An operator accepts a held batch; the alert resolves when nothing is held any more."""
    if not note.strip():
        raise ValueError("accepting a held batch needs a note saying why")
    rows = con.execute(
        "SELECT batch_id, path, validation_id, failed_suites, held_at, status "
        "FROM batch_holds WHERE batch_id = ?",
        [batch_id],
    ).fetchall()
    if not rows:
        raise KeyError(f"no held batch {batch_id!r}")
    found = Hold(*rows[0])
    if found.status != HELD:
        raise ValueError(f"batch {batch_id} is {found.status}, not {HELD}")
    now = datetime.now(UTC)
    con.execute(
        "UPDATE batch_holds SET status = ?, resolved_at = ?, resolution = ? WHERE batch_id = ?",
        [ACCEPTED, now, f"accepted: {note.strip()}", batch_id],
    )
    if not open_holds(con):
        resolve_alerts(con, now)
    return found


def accepted(con: duckdb.DuckDBPyConnection, batch_id: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM batch_holds WHERE batch_id = ? AND status = ?", [batch_id, ACCEPTED]
    ).fetchall()
    return bool(rows)


def resolve_alerts(con: duckdb.DuckDBPyConnection, at: datetime, run_id: str | None = None) -> None:
    for (alert_id,) in con.execute(
        "SELECT alert_id FROM alerts WHERE rule = ? AND resolved_at IS NULL", [BATCH_HELD_RULE]
    ).fetchall():
        alerts.resolve(con, alert_id, at, now=at, run_id=run_id)

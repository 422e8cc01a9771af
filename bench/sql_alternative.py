"""The audit's final tables in plain DuckDB SQL, over the floor's decoded deliveries.

`compute(con)` runs `bench/sql_alternative.sql` against `floor_requests` and
`floor_actions` in `con` (as `bench/floor.py` lands them: one row per delivery, duplicates
kept) and the SLA policy the pipeline applies (`pipelines/data/sla_policy.toml`, loaded as
the pipeline loads it), and creates `alt_requests`, `alt_lifecycle_transitions`,
`alt_sla_breaches` and `alt_backlog_daily`. `compare(con, "audit")` diffs them against the
pipeline's tables in the attached database `audit`.

Example:
    con = duckdb.connect("floor.duckdb")
    compute(con)  # {"alt_requests": 30420, "alt_lifecycle_transitions": 69556, ...}
    con.execute("ATTACH 'audit.duckdb' AS audit (READ_ONLY)")
    compare(con, "audit")  # [] when every table matches
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines import rows
from pipelines.policy import SlaPolicy
from pipelines.settings import Settings

SCRIPT = Path(__file__).resolve().with_suffix(".sql")

# alt table -> the pipeline's table it reproduces (same columns, sql/ddl/0[3-6]0_*.sql).
TABLES = {
    "alt_requests": "requests",
    "alt_lifecycle_transitions": "lifecycle_transitions",
    "alt_sla_breaches": "sla_breaches",
    "alt_backlog_daily": "backlog_daily",
}

_POLICY_COLUMNS = (
    "rule_id",
    "jurisdiction",
    "authority",
    "categories",
    "sla_seconds",
    "effective_from",
    "effective_to",
)


def compute(
    con: duckdb.DuckDBPyConnection,
    settings: Settings | None = None,
    policy: SlaPolicy | None = None,
) -> dict[str, int]:
    """Create the alt_* tables from the floor tables in `con`; their row counts.

    `settings` (default: from the environment, as the CLI reads them) gives the default SLA
    and the intake's time checks; `policy` (default: the packaged table) the SLA rules."""
    settings = settings or Settings()
    policy = policy or SlaPolicy.load(default_sla=settings.default_sla)
    _load_policy(con, policy)
    con.execute(
        "SET VARIABLE alt_default_sla_seconds = ?::BIGINT",
        [int(policy.default_sla.total_seconds())],
    )
    con.execute("SET VARIABLE alt_oldest_plausible = ?::TIMESTAMPTZ", [settings.oldest_plausible])
    con.execute(
        "SET VARIABLE alt_max_clock_skew_seconds = ?::BIGINT", [settings.max_clock_skew_seconds]
    )
    con.execute(SCRIPT.read_text(encoding="utf-8"))
    return {table: _scalar(con, f"SELECT count(*) FROM {table}") for table in TABLES}


def _load_policy(con: duckdb.DuckDBPyConnection, policy: SlaPolicy) -> None:
    policy_rows = [{c: r[c] for c in _POLICY_COLUMNS} for r in policy.rows()]
    rules = pa.Table.from_pylist(
        policy_rows,
        schema=pa.schema(
            [
                ("rule_id", pa.string()),
                ("jurisdiction", pa.string()),
                ("authority", pa.string()),
                ("categories", pa.string()),
                ("sla_seconds", pa.int64()),
                ("effective_from", pa.timestamp("us", tz="UTC")),
                ("effective_to", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    groups = pa.table(
        {
            "group_name": [g for g, members in policy.groups.items() for _ in members],
            "jurisdiction": [m for members in policy.groups.values() for m in sorted(members)],
        },
        schema=pa.schema([("group_name", pa.string()), ("jurisdiction", pa.string())]),
    )
    con.register("alt_policy_arrow", rules)
    con.register("alt_groups_arrow", groups)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE alt_sla_policy AS FROM alt_policy_arrow")
        con.execute("CREATE OR REPLACE TEMP TABLE alt_sla_groups AS FROM alt_groups_arrow")
    finally:
        con.unregister("alt_policy_arrow")
        con.unregister("alt_groups_arrow")


def compare(con: duckdb.DuckDBPyConnection, audit: str, *, examples: int = 3) -> list[str]:
    """Differences between each alt_* table and the pipeline's table in catalog `audit`
    (an attached database or schema), over every column of the pipeline's table, as bags
    of rows. Empty: equal. Example: ["requests: 2 rows only in alt_requests, e.g. (...)"]"""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", audit):
        raise ValueError(f"not a plain catalog name: {audit!r}")
    problems: list[str] = []
    for alt, table in TABLES.items():
        columns = ", ".join(f'"{c}"' for c in rows.SCHEMAS[table].names)
        sides = {
            f"only in {alt}": f"SELECT {columns} FROM {alt} EXCEPT ALL "
            f"SELECT {columns} FROM {audit}.{table}",
            f"only in {audit}.{table}": f"SELECT {columns} FROM {audit}.{table} EXCEPT ALL "
            f"SELECT {columns} FROM {alt}",
        }
        for side, query in sides.items():
            count = _scalar(con, f"SELECT count(*) FROM ({query})")
            if count:
                sample = con.execute(f"{query} ORDER BY ALL LIMIT {int(examples)}").fetchall()
                problems.append(f"{table}: {count} rows {side}, e.g. {sample}")
    return problems


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])

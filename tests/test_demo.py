"""The embedded default end to end on the seed scenario: generated Avro files -> Beam batch
pipeline -> DuckDB -> the auditor's canned SQL reproduces the published figures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.duckdb_sink import table_fingerprints
from pipelines.batch import run_batch
from pipelines.report import run_demo
from pipelines.settings import Settings

pytestmark = pytest.mark.slow


def _unresolved(database: Path, as_of: str) -> dict[str, int]:
    con = connect_auditor(database)
    try:
        query = canned_queries()["unresolved_by_category"]
        columns, rows = run_sql(con, query.sql, query.bind({"as_of": as_of}))
    finally:
        con.close()
    return {row[0]: row[columns.index("unresolved")] for row in rows}


def test_demo_recovers_the_published_figures_and_replays_identically(tmp_path: Path) -> None:
    settings = Settings(database=tmp_path / "audit.duckdb", data_dir=tmp_path / "data")
    out = io.StringIO()
    assert run_demo(settings, scenario="roskomnadzor-twitter-2021", seed=2021, out=out) == 0, (
        out.getvalue()
    )
    assert "demo passed" in out.getvalue()

    # Independently of the report: the regulator's figures, through the auditor's SQL.
    march_1 = _unresolved(settings.database, "2021-03-01T00:00:00Z")
    assert march_1["ALL"] == 2862
    assert march_1["SUICIDE_PROMOTION"] == 2336
    assert march_1["CHILD_SEXUAL_ABUSE_MATERIAL"] == 352
    assert march_1["DRUGS"] == 174
    assert set(march_1) == {"ALL", "SUICIDE_PROMOTION", "CHILD_SEXUAL_ABUSE_MATERIAL", "DRUGS"}
    assert _unresolved(settings.database, "2021-03-11T00:00:00Z")["ALL"] > 3100
    march_16 = _unresolved(settings.database, "2021-03-16T00:00:00Z")
    assert march_16["ALL"] > 3000 and march_16["SUICIDE_PROMOTION"] > 2500

    con = connect_auditor(settings.database)
    try:
        _, account = run_sql(
            con, "SELECT records_in, landed, duplicates, quarantined, balanced FROM record_account"
        )
        _, backlog = run_sql(
            con,
            "SELECT sum(unresolved) FROM backlog_daily WHERE as_of = TIMESTAMPTZ '2021-03-01'",
        )
        before = table_fingerprints(con)
    finally:
        con.close()
    ((records_in, _landed, duplicates, quarantined, balanced),) = account
    assert balanced and duplicates > 0 and quarantined > 0
    # The pipeline's own daily backlog agrees with the SQL as-of status.
    assert backlog == [(2862,)]

    # A second run over the same files leaves the same rows and the same content hashes.
    inputs = sorted(settings.data_dir.glob("*.avro"))
    report = run_batch(inputs, settings)
    assert report.replayed and report.records_in == records_in
    con = connect_auditor(settings.database)
    try:
        assert table_fingerprints(con) == before
    finally:
        con.close()

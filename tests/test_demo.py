"""The embedded default end to end on the seed scenario: generated Avro files -> Beam batch
pipeline -> DuckDB -> the auditor's canned SQL reproduces the published figures."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.duckdb_sink import table_fingerprints
from pipelines.batch import run_batch
from pipelines.settings import Settings

pytestmark = pytest.mark.slow


def _sql(settings: Settings, sql: str, **params: str) -> list[tuple[Any, ...]]:
    con = connect_auditor(settings.database)
    try:
        return run_sql(con, sql, params or None)[1]
    finally:
        con.close()


def _unresolved(settings: Settings, as_of: str) -> dict[str, int]:
    query = canned_queries()["unresolved_by_category"]
    con = connect_auditor(settings.database)
    try:
        columns, rows = run_sql(con, query.sql, query.bind({"as_of": as_of}))
    finally:
        con.close()
    return {row[0]: row[columns.index("unresolved")] for row in rows}


def test_report_says_every_figure_matches(demo: tuple[Settings, str]) -> None:
    _, report = demo
    assert "demo passed" in report
    assert "| NO" not in report and "  NO" not in report
    assert "--canned unresolved_by_category --param as_of=2021-03-01T00:00:00Z" in report


def test_published_figures_through_the_auditor_sql(demo: tuple[Settings, str]) -> None:
    settings, _ = demo
    march_1 = _unresolved(settings, "2021-03-01T00:00:00Z")
    assert march_1 == {
        "ALL": 2862,
        "SUICIDE_PROMOTION": 2336,
        "CHILD_SEXUAL_ABUSE_MATERIAL": 352,
        "DRUGS": 174,
    }
    assert _unresolved(settings, "2021-03-11T00:00:00Z")["ALL"] > 3100
    march_16 = _unresolved(settings, "2021-03-16T00:00:00Z")
    assert march_16["ALL"] > 3000 and march_16["SUICIDE_PROMOTION"] > 2500


def test_every_record_is_accounted_for(demo: tuple[Settings, str]) -> None:
    settings, _ = demo
    ((records_in, landed, duplicates, quarantined, balanced),) = _sql(
        settings, "SELECT records_in, landed, duplicates, quarantined, balanced FROM record_account"
    )
    assert balanced and duplicates > 0 and quarantined > 0
    assert records_in == landed + duplicates + quarantined
    reasons = {r[0] for r in _sql(settings, "SELECT DISTINCT reason_code FROM quarantine")}
    assert {"TRUNCATED", "TRAILING_BYTES", "UNKNOWN_FINGERPRINT"} <= reasons


def test_daily_backlog_agrees_with_status_as_of(demo: tuple[Settings, str]) -> None:
    """The pipeline's backlog series and the SQL status macro are computed independently
    (Beam deltas vs transitions in SQL); they must agree on every first of the month."""
    settings, _ = demo
    disagreements = _sql(
        settings,
        """
        WITH days AS (
            SELECT unnest(generate_series(TIMESTAMPTZ '2017-02-01', TIMESTAMPTZ '2021-05-01',
                                          INTERVAL 1 MONTH)) AS as_of
        ), pipeline AS (
            SELECT d.as_of, b.category, arg_max(b.unresolved, b.as_of) AS unresolved
            FROM days d JOIN backlog_daily b ON b.as_of <= d.as_of
            GROUP BY d.as_of, b.category
        ), sql_status AS (
            SELECT d.as_of, s.category, count(*) AS unresolved
            FROM days d, LATERAL (SELECT * FROM request_status_as_of(d.as_of)) s
            WHERE s.unresolved
            GROUP BY d.as_of, s.category
        )
        SELECT * FROM pipeline p FULL JOIN sql_status s USING (as_of, category)
        WHERE coalesce(p.unresolved, 0) <> coalesce(s.unresolved, 0)
        """,
    )
    assert disagreements == []


def test_canned_audits_answer(demo: tuple[Settings, str]) -> None:
    settings, _ = demo
    queries = canned_queries()
    con = connect_auditor(settings.database)
    try:
        given = {"as_of": "2021-03-16", "since": "2017-01-01"}
        results = {
            name: run_sql(con, q.sql, q.bind({k: v for k, v in given.items() if k in q.params}))
            for name, q in queries.items()
        }
    finally:
        con.close()
    # An audit returns the violating rows: the seed has none for the orphan audit (every
    # action's content has a request), rows for every other query.
    assert results.pop("unmatched_orphan_actions")[1] == []
    assert all(rows for _, rows in results.values())
    columns, rows = results["time_to_action_percentiles"]
    p50 = {(r[0], r[1]): r[columns.index("p50_hours")] for r in rows}
    # most removals land inside the 24 h deadline
    assert 0 < p50["SUICIDE_PROMOTION", "REMOVED"] < 24
    columns, rows = results["oldest_open_requests"]
    assert len(rows) == 20 and all(
        r[columns.index("status")] in ("OVERDUE", "DECLINED") for r in rows
    )


def test_replay_leaves_identical_tables(demo: tuple[Settings, str]) -> None:
    settings, _ = demo
    con = connect_auditor(settings.database)
    try:
        before = table_fingerprints(con)
    finally:
        con.close()
    report = run_batch(sorted(settings.data_dir.glob("*.avro")), settings)
    assert report.replayed
    con = connect_auditor(settings.database)
    try:
        assert table_fingerprints(con) == before
    finally:
        con.close()


def test_the_demo_load_passed_the_data_quality_gate(demo: tuple[Settings, str]) -> None:
    settings, report = demo
    assert "data-quality gate: 5 suites, 35 expectations: passed (validation " in report
    rows = _sql(
        settings,
        "SELECT suite, path, scope, success, rows_checked FROM batch_validations ORDER BY suite",
    )
    assert [(s, p, sc, ok) for s, p, sc, ok, _ in rows] == [
        (suite, "batch", "all", True)
        for suite in (
            "action_events",
            "backlog_daily",
            "lifecycle_transitions",
            "request_events",
            "requests",
        )
    ]
    assert dict((s, n) for s, *_, n in rows)["requests"] == 30_420
    assert _sql(settings, "SELECT count(*) FROM batch_holds") == [(0,)]

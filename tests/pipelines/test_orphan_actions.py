"""An action on content no request targets is kept as an orphan, not quarantined: matched
when its request arrives later (the request resolves at once), reported when none comes."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.settings import Settings
from tests.conftest import WriteFiles, action, message, request

pytestmark = pytest.mark.slow


def test_orphans_are_kept_matched_later_or_reported(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    requests = [
        request(1, content="late", hours=48),  # arrives two days after its content's removal
        request(2, content="c2", hours=24 * 60),  # moves the data horizon 60 days on
    ]
    actions = [
        action(1, content="late", hours=2),
        action(2, content="never", hours=3),  # no request ever targets it
        action(3, content="recent", hours=24 * 60 - 1),  # no request yet, within the grace
    ]
    inputs = write_files(
        tmp_path / "in",
        [message(store, r) for r in requests],
        [message(store, a) for a in actions],
    )
    settings = Settings(database=tmp_path / "audit.duckdb")
    report = run_batch(inputs, settings)
    assert report.balanced and report.quarantined == 0 and report.landed == 5

    con = connect_auditor(settings.database)
    try:
        _, orphans = run_sql(con, "SELECT action_id FROM orphan_actions ORDER BY action_id")
        assert orphans == [("A2",), ("A3",)]
        _, resolved = run_sql(
            con, "SELECT first_resolved_at, breached FROM requests WHERE request_id = 'R1'"
        )
        assert resolved == [(request(1, content="late", hours=48).issued_at, False)]
        query = canned_queries()["unmatched_orphan_actions"]
        columns, rows = run_sql(con, query.sql, query.bind({}))
        assert [r[columns.index("action_id")] for r in rows] == ["A2"]
        assert rows[0][columns.index("waiting_days")] == pytest.approx(60 - 3 / 24, abs=0.1)
        _, rows = run_sql(con, query.sql, query.bind({"grace_days": "90"}))
        assert rows == []
    finally:
        con.close()

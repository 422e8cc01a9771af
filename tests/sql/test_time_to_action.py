"""The canned `time_to_action_percentiles` times each request by how it was first resolved:
a removal, a restriction, an account suspension and a "content not found" answer are apart;
a request for content already down resolves at issue and is not timed as a platform's
response; a request never resolved is counted, not timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.model import ActionType
from pipelines.settings import Settings
from tests.conftest import WriteFiles, action, message, request

pytestmark = pytest.mark.slow


def test_time_to_action_is_split_by_how_requests_were_resolved(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    requests = [
        request(1, content="c1"),
        request(2, content="c2"),
        request(3, content="c3", hours=10),  # its content was removed at hour 1
        request(4, content="c4"),  # never answered
        request(5, content="c5"),
    ]
    actions = [
        action(1, content="c1", hours=2),
        action(2, content="c2", hours=5, kind=ActionType.CONTENT_NOT_FOUND),
        action(3, content="c3", hours=1),
        action(5, content="c5", hours=30, kind=ActionType.RESTRICTED, jurisdiction="RU"),
    ]
    inputs = write_files(
        tmp_path / "in",
        [message(store, r) for r in requests],
        [message(store, a) for a in actions],
    )
    settings = Settings(database=tmp_path / "audit.duckdb", quality_gate=False)
    assert run_batch(inputs, settings).balanced

    query = canned_queries()["time_to_action_percentiles"]
    con = connect_auditor(settings.database)
    try:
        columns, rows = run_sql(con, query.sql, query.bind({}))
    finally:
        con.close()
    got = {
        r[columns.index("resolved_by")]: (
            r[columns.index("requests")],
            r[columns.index("p50_hours")],
            r[columns.index("on_time_share")],
        )
        for r in rows
    }
    assert {r[columns.index("category")] for r in rows} == {"SUICIDE_PROMOTION"}
    assert got == {
        "REMOVED": (1, 2.0, 1.0),
        "CONTENT_NOT_FOUND": (1, 5.0, 1.0),
        "ALREADY_DOWN": (1, 0.0, 1.0),
        "RESTRICTED": (1, 30.0, 0.0),  # past its 24 h deadline
        "NOT_RESOLVED": (1, None, 0.0),
    }

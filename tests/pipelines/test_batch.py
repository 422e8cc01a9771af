"""The batch pipeline end to end on a small, hand-checked event set: real Avro files in,
the real Beam local runner, a real DuckDB file out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.avro_codec import encode_single_object
from connectors.avro_files import RawMessage
from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.duckdb_sink import table_fingerprints
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.model import ActionType, Category
from pipelines.settings import Settings
from tests.conftest import T0, WriteFiles, action, message, request

pytestmark = pytest.mark.slow

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _messages(store: SchemaStore) -> tuple[list[RawMessage], list[RawMessage]]:
    r1, r2 = request(1, content="c1"), request(2, content="c1", hours=2)
    r3 = request(3, content="c2")
    r4 = request(4, content="c3")
    r5 = request(5, content="c4", hours=10)
    r6 = request(6, content="c5", category=Category.TERRORISM, jurisdiction="ZZ")
    v1_record = {
        k: v
        for k, v in r5.to_avro().items()
        if k not in ("event_type", "authority_kind", "withdrawn_at")
    }
    r5_v1 = RawMessage(
        "removal.requests",
        b"twitter/c4",
        encode_single_object(v1_record, "removal.requests-value", store, version=1),
        None,
    )
    conflicting = message(store, dataclasses.replace(r3, content_id="c9"))
    valid = message(store, r1)
    requests = [
        message(store, r2),
        valid,
        message(store, r3),
        message(store, r4),
        r5_v1,
        message(store, r6),
        valid,  # repeated delivery
        conflicting,  # same event_id, other content
        RawMessage("removal.requests", None, valid.value[:-3], None),  # truncated
        RawMessage("removal.requests", None, valid.value + b"\x00", None),  # trailing bytes
    ]
    actions = [
        message(store, action(1, content="c1", hours=30)),
        message(
            store, action(2, content="c2", hours=5, kind=ActionType.RESTRICTED, jurisdiction="RU")
        ),
        message(store, action(3, content="c3", hours=1, kind=ActionType.DECLINED, request_id="R4")),
        message(
            store, action(4, content="c2", hours=6, kind=ActionType.RESTRICTED)
        ),  # no jurisdiction
        message(
            store,
            dataclasses.replace(action(5, content="c4"), acted_at=datetime(1970, 1, 2, tzinfo=UTC)),
        ),
    ]
    return requests, actions


@pytest.fixture
def landed(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> tuple[Settings, list[Path]]:
    inputs = write_files(tmp_path / "in", *_messages(store))
    settings = Settings(database=tmp_path / "audit.duckdb")
    report = run_batch(inputs, settings, now=NOW)
    assert (report.records_in, report.landed, report.duplicates, report.quarantined) == (
        15,
        9,
        1,
        5,
    )
    assert report.balanced and not report.replayed
    return settings, inputs


def _query(settings: Settings, name: str, **params: str) -> dict[str, tuple[object, ...]]:
    con = connect_auditor(settings.database)
    try:
        q = canned_queries()[name]
        _, rows = run_sql(con, q.sql, q.bind(params))
    finally:
        con.close()
    return {str(r[0]): r[1:] for r in rows}


def test_unresolved_by_category_as_of(landed: tuple[Settings, list[Path]]) -> None:
    settings, _ = landed
    as_of = (T0 + timedelta(hours=27)).isoformat()
    # (open, overdue, declined, unresolved): R1, R2 overdue, R4 declined, R5 open; R6 overdue
    # under the flagged default deadline; R3 was restricted in time.
    assert _query(settings, "unresolved_by_category", as_of=as_of) == {
        "SUICIDE_PROMOTION": (1, 2, 1, 4),
        "TERRORISM": (0, 1, 0, 1),
        "ALL": (1, 3, 1, 5),
    }
    later = (T0 + timedelta(hours=31)).isoformat()
    assert _query(settings, "unresolved_by_category", as_of=later)["ALL"] == (1, 1, 1, 3)


def test_quarantine_keeps_reason_and_bytes(landed: tuple[Settings, list[Path]]) -> None:
    settings, _ = landed
    con = connect_auditor(settings.database)
    try:
        _, rows = run_sql(
            con,
            "SELECT reason_code, source_ref, octet_length(raw_value) > 0, raw_key "
            "FROM quarantine ORDER BY 1",
        )
        _, requests = run_sql(
            con,
            "SELECT request_id, sla_rule_id, sla_default_used, breached FROM requests ORDER BY 1",
        )
        _, versions = run_sql(
            con, "SELECT event_id, schema_version FROM request_events WHERE schema_version = 1"
        )
    finally:
        con.close()
    assert [r[0] for r in rows] == [
        "EVENT_ID_CONFLICT",
        "MISSING_REQUIRED_FIELD",
        "TIMESTAMP_TOO_OLD",
        "TRAILING_BYTES",
        "TRUNCATED",
    ]
    assert all(r[2] for r in rows)
    # The conflicting delivery's own key (its content is c9), not the kept one's (c2).
    assert rows[0][0] == "EVENT_ID_CONFLICT" and rows[0][3] == b"twitter/c9"
    assert {r[1] for r in rows} == {
        "requests.avro#7",
        "actions.avro#3",
        "actions.avro#4",
        "requests.avro#9",
        "requests.avro#8",
    }
    assert requests == [
        ("R1", "RU-149FZ-15.1", False, True),
        ("R2", "RU-149FZ-15.1", False, True),
        ("R3", "RU-149FZ-15.1", False, False),
        ("R4", "RU-149FZ-15.1", False, True),
        ("R5", "RU-149FZ-15.1", False, True),
        ("R6", "DEFAULT", True, True),
    ]
    assert versions == [("rq-5", 1)]


def test_replay_leaves_identical_tables(landed: tuple[Settings, list[Path]]) -> None:
    settings, inputs = landed
    con = connect_auditor(settings.database)
    before = table_fingerprints(con)
    con.close()
    report = run_batch(inputs, settings, now=NOW)
    assert report.replayed
    con = connect_auditor(settings.database)
    after = table_fingerprints(con)
    con.close()
    assert after == before
    assert before["load_ledger"][0] == 1
    assert before["lifecycle_transitions"][0] > 0


def test_every_category_maps_to_a_dsa_category(landed: tuple[Settings, list[Path]]) -> None:
    settings, _ = landed
    con = connect_auditor(settings.database)
    try:
        _, rows = run_sql(con, "SELECT category FROM dsa_category_map ORDER BY 1")
    finally:
        con.close()
    assert [r[0] for r in rows] == sorted(c.value for c in Category)

"""The data-quality gate: the suites pass on the seed audit and catch each kind of damage;
a failing batch load is held (previous tables kept, alert raised once) until accepted; a
failing streaming batch stops the snapshot at the last good state until a fix lands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from connectors.duckdb_quality import BatchHeld
from connectors.duckdb_sink import AUDIT_TABLES, connect_writer, land_batch, land_policy
from connectors.duckdb_sink import table_fingerprints as fingerprints
from connectors.duckdb_stream_sink import LandingBatch
from connectors.duckdb_stream_writer import SharedWriter, WriterConfig
from pipelines.policy import SlaPolicy
from pipelines.quality_gate import QualityGate
from pipelines.rows import SCHEMAS
from pipelines.settings import Settings


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate.from_settings(Settings())


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    rows = con.execute(sql).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


def test_the_seed_audit_passes_every_suite(
    gate: QualityGate, audit: duckdb.DuckDBPyConnection
) -> None:
    outcome = gate.evaluate(audit, None)
    assert outcome.passed, outcome.describe()
    assert {r.suite for r in outcome.results} == {
        "request_events",
        "action_events",
        "requests",
        "lifecycle_transitions",
        "backlog_daily",
    }
    rows = {r.suite: r.rows for r in outcome.results}
    assert rows["requests"] == 30_420 and rows["lifecycle_transitions"] == 69_556
    assert all(r.evaluated >= 5 for r in outcome.results)


# (damage, suite, columns of the failing expectation(s), key of the damaged row)
DAMAGE = {
    "deadline off its SLA": (
        "UPDATE requests SET sla_seconds = 3600 WHERE request_id = '{r}'",
        "requests",
        {("deadline_is_issue_plus_sla",), ("policy_consistent",)},
    ),
    "SLA not the policy rule's": (
        "UPDATE requests SET sla_seconds = 7200, deadline_at = issued_at + INTERVAL 2 HOUR "
        "WHERE request_id = '{r}'",
        "requests",
        {("policy_consistent",)},
    ),
    "action before its request": (
        "UPDATE action_events SET acted_at = (SELECT issued_at FROM requests "
        "WHERE request_id = '{r}') - INTERVAL 1 HOUR WHERE request_id = '{r}'",
        "action_events",
        {("acted_minus_issued_s",)},
    ),
    "unknown category": (
        "UPDATE request_events SET category = 'GOSSIP' WHERE request_id = '{r}'",
        "request_events",
        {("category",)},
    ),
    "gap in a history": (
        "DELETE FROM lifecycle_transitions WHERE request_id = '{r}' AND seq = 1",
        "lifecycle_transitions",
        {("seq", "seq_expected")},
    ),
    # A suite reports only what is wrong: the action naming the request is not reported
    # again (its event_id stays unique although the join to requests finds two rows).
    "request landed twice": (
        "INSERT INTO requests SELECT * FROM requests WHERE request_id = '{r}'",
        "requests",
        {("request_id",)},
    ),
    "backlog off the lifecycle": (
        "UPDATE backlog_daily SET open = open + 1 WHERE as_of = (SELECT max(as_of) FROM "
        "backlog_daily) AND category = 'DRUGS'",
        "backlog_daily",
        {("unresolved", "parts_sum"), ("open", "recounted_open")},
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_kind_of_damage_fails_its_expectation(
    gate: QualityGate, audit: duckdb.DuckDBPyConnection, damage: str
) -> None:
    sql, suite, columns = DAMAGE[damage]
    # A request with an action naming it and at least three transitions.
    request = _one(
        audit,
        "SELECT request_id FROM lifecycle_transitions JOIN action_events USING (request_id) "
        "GROUP BY ALL HAVING count(DISTINCT seq) >= 3 ORDER BY request_id LIMIT 1",
    )
    audit.execute(sql.format(r=request))
    scope = {"requests": [request], "request_events": [], "action_events": []}
    scope["request_events"] = [
        e
        for (e,) in audit.execute(
            "SELECT event_id FROM request_events WHERE request_id = ?", [request]
        ).fetchall()
    ]
    scope["action_events"] = [
        e
        for (e,) in audit.execute(
            "SELECT event_id FROM action_events WHERE request_id = ?", [request]
        ).fetchall()
    ]
    for outcome in (gate.evaluate(audit, None), gate.evaluate(audit, scope)):
        assert outcome.failed_suites == [suite], outcome.describe()
        (failed,) = [r for r in outcome.results if not r.success]
        assert {f.columns for f in failed.failures} == columns
        for failure in failed.failures:
            assert failure.unexpected is not None and failure.unexpected >= 1
            assert failure.note and failure.sample
            if suite != "backlog_daily":
                # both rows of a request landed twice are reported
                assert failure.unexpected == (2 if damage == "request landed twice" else 1)
                assert request in json.dumps(failure.sample[0])


def _stage(con: duckdb.DuckDBPyConnection, stage: Path) -> None:
    stage.mkdir()
    for table in AUDIT_TABLES:
        con.execute(f"COPY (SELECT * FROM {table}) TO '{stage / table}-0.parquet'")


def test_a_failing_batch_load_is_held_until_accepted(
    gate: QualityGate, audit: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    database = tmp_path / "audit.duckdb"  # the fixture's copy
    accounted = _one(audit, "SELECT records_in FROM load_ledger")
    good = fingerprints(audit)
    audit.execute("UPDATE requests SET sla_seconds = 3600 WHERE request_id = 'RKN-2017-000001'")
    _stage(audit, tmp_path / "stage")
    audit.execute("UPDATE requests SET sla_seconds = 86400 WHERE request_id = 'RKN-2017-000001'")
    assert fingerprints(audit) == good
    audit.close()
    inputs = [tmp_path / "requests.avro"]
    inputs[0].write_bytes(b"not read: the run's identity only")
    policy = SlaPolicy.load()

    def load() -> Any:
        return land_batch(
            database,
            tmp_path / "stage",
            inputs=inputs,
            records_in=accounted,
            policy_version=policy.version,
            policy_rows=policy.rows(),
            gate=gate,
        )

    for _ in range(2):  # loaded twice: still held, one alert
        with pytest.raises(BatchHeld, match="removal-audit validate --accept") as held:
            load()
    con = connect_writer(database)
    try:
        after = fingerprints(con)
        for table in AUDIT_TABLES:
            assert after[table] == good[table], table  # the previous load stays published
        holds = con.execute("SELECT batch_id, path, status, failed_suites FROM batch_holds")
        assert holds.fetchall() == [(held.value.batch_id, "batch", "HELD", "requests")]
        # (The first, good load evaluated the alert rules on the seed: their episodes are
        # there too, all resolved; the held load's evaluation was rolled back with it.)
        alerts = con.execute(
            "SELECT rule, severity, labels, resolved_at IS NULL FROM alerts "
            "WHERE rule = 'BatchHeld' OR resolved_at IS NULL"
        ).fetchall()
        assert alerts == [("BatchHeld", "critical", '{"path": "batch"}', True)]
        failures = con.execute(
            "SELECT suite, failures FROM batch_validations WHERE NOT success"
        ).fetchall()
        assert [s for s, _ in failures] == ["requests", "requests"]
        assert "RKN-2017-000001" in failures[0][1]
        from connectors.duckdb_quality import accept

        accept(con, held.value.batch_id, "the 1 h deadline was agreed with the regulator")
    finally:
        con.close()
    report = load()  # accepted: lands, its failed validation on record
    assert report.balanced and not report.replayed
    con = connect_writer(database)
    try:
        assert (
            _one(con, "SELECT sla_seconds FROM requests WHERE request_id = 'RKN-2017-000001'")
            == 3600
        )
        assert con.execute("SELECT status FROM batch_holds").fetchall() == [("ACCEPTED",)]
        assert _one(con, "SELECT count(*) FROM alerts WHERE resolved_at IS NULL") == 0
    finally:
        con.close()


def _request_batch(
    source: duckdb.DuckDBPyConnection, request: str, sla: int, offset: int
) -> _Ready:
    """The landed rows of one request (events, request, history) as a streaming batch
    covering `offset`, with the request's SLA set to `sla` seconds (its deadline left as
    it was)."""
    tables = {}
    for table, where in (
        ("request_events", "request_id"),
        ("requests", "request_id"),
        ("lifecycle_transitions", "request_id"),
    ):
        rows = source.sql(f"SELECT * FROM {table} WHERE {where} = '{request}'").to_arrow_table()
        tables[table] = rows.cast(SCHEMAS[table])
    requests = tables["requests"]
    column = requests.schema.get_field_index("sla_seconds")
    tables["requests"] = requests.set_column(
        column, "sla_seconds", pa.array([sla] * requests.num_rows, pa.int64())
    )
    offsets = {("removal.requests", 0): [(offset, offset)]}
    return _Ready(LandingBatch.covering(offsets, tables))


def _holds(database: Path) -> int:
    # The same process: DuckDB shares the writer's open database with this connection.
    con = duckdb.connect(str(database))
    try:
        return int(con.execute("SELECT count(*) FROM batch_holds").fetchall()[0][0])
    finally:
        con.close()


class _Ready:
    """A built batch handed to the writer as its pending rows (one per flush here)."""

    watermark = None

    def __init__(self, batch: LandingBatch) -> None:
        self._batch = batch

    def __len__(self) -> int:
        return sum(t.num_rows for t in self._batch.tables.values())

    def merge(self, later: _Ready) -> None:
        raise AssertionError("each batch is flushed before the next is submitted")

    def batch(self) -> LandingBatch:
        return self._batch


def test_a_failing_streaming_batch_holds_the_snapshot_until_a_fix_lands(
    gate: QualityGate, demo: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, _ = demo
    source = duckdb.connect(str(settings.database), read_only=True)
    database, snapshot = tmp_path / "stream.duckdb", tmp_path / "snapshot.duckdb"
    con = connect_writer(database)
    policy = SlaPolicy.load()
    land_policy(con, policy.version, policy.rows())
    con.close()
    config = WriterConfig(
        database, snapshot, snapshot_every_s=0, flush_every_s=3600, gate=gate.check_stream
    )
    writer = SharedWriter.acquire(config)
    try:
        writer.submit(_request_batch(source, "RKN-2017-000001", 86_400, 0))
        writer.flush()
        writer.publish_now()
        published = snapshot.stat().st_mtime_ns
        writer.submit(_request_batch(source, "RKN-2017-000001", 3_600, 1))  # deadline now off
        writer.flush()
        writer.publish_now()
        assert snapshot.stat().st_mtime_ns == published  # auditors keep the good state
        assert _holds(database) == 0  # not held yet: a reference may be landing next
        writer.publish_now()  # checked again: still failing
        assert snapshot.stat().st_mtime_ns == published
        assert _holds(database) == 1
        writer.submit(_request_batch(source, "RKN-2017-000002", 86_400, 2))
        writer.flush()
        writer.publish_now()  # every row checked while held: still failing
        assert snapshot.stat().st_mtime_ns == published
        writer.submit(_request_batch(source, "RKN-2017-000001", 86_400, 3))  # the fix
        writer.flush()
        writer.publish_now()
        assert snapshot.stat().st_mtime_ns != published
    finally:
        SharedWriter.release(config)
        source.close()
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM requests").fetchall() == [(2,)]
        holds = con.execute(
            "SELECT path, status, failed_suites FROM batch_holds ORDER BY held_at"
        ).fetchall()
        assert holds == [("stream", "RELEASED", "requests")] * 2
        alerts = con.execute("SELECT rule, resolved_at IS NOT NULL FROM alerts").fetchall()
        assert alerts == [("BatchHeld", True)]
        scopes = con.execute(
            "SELECT scope, bool_and(success) FROM batch_validations GROUP BY validation_id, "
            "scope ORDER BY min(validated_at)"
        ).fetchall()
        assert scopes == [
            ("batch", True),
            ("batch", False),
            ("batch", False),
            ("all", False),
            ("all", True),
        ]
    finally:
        con.close()

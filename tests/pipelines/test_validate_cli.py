"""`removal-audit validate`: on-demand validation with Data Docs, held batches listed and
released by a passing validation, read-only runs that record nothing."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from connectors.duckdb_sink import connect_writer
from pipelines.cli import main
from pipelines.quality_gate import QualityGate
from pipelines.settings import Settings


def _validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["validate", *args])
    return status, capsys.readouterr().out


def _count(database: Path, sql: str) -> int:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return int(con.execute(sql).fetchall()[0][0])
    finally:
        con.close()


def test_validate_writes_data_docs_and_records_the_run(
    audit_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    status, out = _validate(capsys, "--db", str(audit_path), "--docs", str(docs))
    assert status == 0, out
    assert "passed" in out and f"{docs / 'index.html'}" in out
    index = (docs / "index.html").read_text(encoding="utf-8")
    for suite in (
        "requests",
        "request_events",
        "action_events",
        "lifecycle_transitions",
        "backlog_daily",
    ):
        assert suite in index
        pages = list((docs / "validations" / suite).rglob("*.html"))
        assert len(pages) == 1, pages
        assert "policy_consistent" in (docs / "expectations" / "requests.html").read_text()
    assert (
        _count(
            audit_path,
            "SELECT count(*) FROM batch_validations WHERE path = 'on-demand' "
            "AND scope = 'all' AND success",
        )
        == 5
    )


def test_a_hold_is_listed_and_a_passing_validation_releases_it(
    audit_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    con = connect_writer(audit_path)
    try:
        con.execute("UPDATE requests SET sla_seconds = 3600 WHERE request_id = 'RKN-2017-000001'")
        gate = QualityGate.from_settings(Settings())
        outcome = gate.evaluate(con, None)
        gate.record(con, outcome, path="stream", batch_ids=["b-1"], hold=True)
    finally:
        con.close()
    status, out = _validate(capsys, "--db", str(audit_path), "--holds")
    assert status == 1
    assert "stream batch b-1 held since" in out
    assert "requests: expect_column_values_to_be_in_set(policy_consistent) 1 unexpected" in out

    status, out = _validate(capsys, "--db", str(audit_path))  # still damaged: stays held
    assert status == 1 and "FAIL requests" in out and "RKN-2017-000001" in out
    assert _count(audit_path, "SELECT count(*) FROM batch_holds WHERE status = 'HELD'") == 1

    con = connect_writer(audit_path)
    try:
        con.execute("UPDATE requests SET sla_seconds = 86400 WHERE request_id = 'RKN-2017-000001'")
    finally:
        con.close()
    status, out = _validate(capsys, "--db", str(audit_path))
    assert status == 0 and "released 1 held batch(es)" in out
    assert _count(audit_path, "SELECT count(*) FROM batch_holds WHERE status = 'RELEASED'") == 1
    assert _count(audit_path, "SELECT count(*) FROM alerts WHERE resolved_at IS NULL") == 0
    status, out = _validate(capsys, "--db", str(audit_path), "--holds")
    assert status == 0 and "no held batches" in out


def test_read_only_validation_records_nothing_and_cannot_accept(
    audit_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _validate(capsys, "--db", str(audit_path), "--read-only")
    assert status == 0 and "passed" in out
    assert (
        _count(audit_path, "SELECT count(*) FROM batch_validations WHERE path = 'on-demand'") == 0
    )
    status = main(
        ["validate", "--db", str(audit_path), "--read-only", "--accept", "b", "--note", "x"]
    )
    assert status == 2
    assert "not with --read-only" in capsys.readouterr().err
    status = main(["validate", "--db", str(audit_path), "--accept", "nope", "--note", "x"])
    assert status == 2
    assert "no held batch 'nope'" in capsys.readouterr().err

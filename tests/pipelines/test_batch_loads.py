"""What a batch load leaves behind: positions that name their file among the inputs, no
database when a run fails before it commits, and no staging files after any run, killed or
not. Real Avro files, the real local runner, real DuckDB files; a signalled run is a real
`removal-audit run` process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from connectors.avro_files import RawMessage
from connectors.duckdb_sink import AUDIT_TABLES, table_fingerprints
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.cli import main
from pipelines.settings import Settings
from tests.conftest import WriteFiles, action, message, read_rows, request
from tests.streaming_job import cli

pytestmark = pytest.mark.slow

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _fingerprints(database: Path) -> dict[str, tuple[int, str]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        every = table_fingerprints(con)
    finally:
        con.close()
    return {table: every[table] for table in AUDIT_TABLES}


def _two_directories(root: Path, store: SchemaStore, write_files: WriteFiles) -> list[Path]:
    """a/ and b/ both hold requests.avro and actions.avro: b's second record is refused
    like a's, at the same position, and its third repeats a's first."""
    r1 = message(store, request(1, content="c1"))
    bad = RawMessage("removal.requests", None, r1.value[:-3], None)  # truncated
    a = [r1, bad]
    b = [message(store, request(2, content="c2")), bad, r1]
    return [
        *write_files(root / "a", a, [message(store, action(1, content="c1", hours=3))]),
        *write_files(root / "b", b, [message(store, action(2, content="c2", hours=4))]),
    ]


def test_files_named_alike_in_two_directories_land_apart(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    inputs = _two_directories(tmp_path / "in", store, write_files)
    report = run_batch(inputs, Settings(database=tmp_path / "audit.duckdb"), now=NOW)
    assert (report.records_in, report.landed, report.duplicates, report.quarantined) == (
        7,
        4,
        1,
        2,
    )
    refs = read_rows(
        tmp_path / "audit.duckdb",
        "SELECT source_ref FROM request_events UNION ALL SELECT source_ref FROM action_events "
        "UNION ALL SELECT source_ref FROM quarantine "
        "UNION ALL SELECT source_ref FROM duplicate_deliveries ORDER BY 1",
    )
    assert [r[0] for r in refs] == [
        "a/actions.avro#0",
        "a/requests.avro#0",
        "a/requests.avro#1",
        "b/actions.avro#0",
        "b/requests.avro#0",
        "b/requests.avro#1",
        "b/requests.avro#2",
    ]
    # The same tree elsewhere, listed in another order: the same run, the same rows.
    shutil.copytree(tmp_path / "in", tmp_path / "moved" / "in")
    moved = sorted((tmp_path / "moved").rglob("*.avro"), reverse=True)
    again = run_batch(moved, Settings(database=tmp_path / "again.duckdb"), now=NOW)
    assert again.run_id == report.run_id
    first, second = (_fingerprints(tmp_path / name) for name in ("audit.duckdb", "again.duckdb"))
    assert first == second


def _fingerprint(database: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["fingerprint", "--db", str(database)]) == 0
    return out.getvalue()


def test_two_runs_over_the_same_files_print_the_same_fingerprints(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    inputs = _two_directories(tmp_path / "in", store, write_files)
    for name in ("one.duckdb", "two.duckdb"):
        run_batch(inputs, Settings(database=tmp_path / name), now=NOW)
    one, two = _fingerprint(tmp_path / "one.duckdb"), _fingerprint(tmp_path / "two.duckdb")
    assert one == two
    counts = {line.split()[0]: line.split()[1] for line in one.splitlines()[:-1]}
    # Validated, evaluated and ledgered, each with its wall clock: all in the comparison.
    assert counts["batch_validations"] == "5" and counts["load_ledger"] == "1"
    assert counts["alert_evaluations"] == "3"
    assert "load_ledger.loaded_at" in one.splitlines()[-1]


def _signalled_run(
    tmp_path: Path,
    inputs: Sequence[Path],
    database: Path,
    signum: int,
    when: Callable[[], bool],
) -> tuple[int, str]:
    """`removal-audit run` over `inputs`, sent `signum` as soon as `when()` holds."""
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cli("run", "--db", str(database), *map(str, inputs)),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 120
        while not when():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.005)
        process.send_signal(signum)
        return process.wait(timeout=120), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_run_interrupted_while_landing_leaves_no_database(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    _two_directories(tmp_path / "in", store, write_files)
    database = tmp_path / "db" / "audit.duckdb"
    inputs = [tmp_path / "in" / "a", tmp_path / "in" / "b"]
    code, log = _signalled_run(tmp_path, inputs, database, signal.SIGINT, database.exists)
    assert code != 0 and "KeyboardInterrupt" in log, log  # before it committed
    assert not database.exists(), log
    assert not database.with_name("audit.duckdb.wal").exists(), log


def test_a_run_removes_the_stages_of_dead_runs_only(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    inputs = _two_directories(tmp_path / "in", store, write_files)
    ended = subprocess.Popen(["true"])
    ended.wait()  # reaped: its process id names no running process
    dead = tmp_path / f".stage-{ended.pid}-x1"
    live = tmp_path / f".stage-{os.getpid()}-x2"  # this test's: a concurrent run's stage
    for stage in (dead, live):
        (stage / "quarantine-00000.parquet").parent.mkdir()
        (stage / "quarantine-00000.parquet").write_bytes(b"raw bytes of a quarantined record")
    run_batch(inputs, Settings(database=tmp_path / "audit.duckdb"), now=NOW)
    assert sorted(p.name for p in tmp_path.glob(".stage-*")) == [live.name]


def test_a_terminated_run_leaves_no_stage_and_no_database(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    _two_directories(tmp_path / "in", store, write_files)
    database = tmp_path / "db" / "audit.duckdb"
    inputs = [tmp_path / "in" / "a", tmp_path / "in" / "b"]

    def staged() -> bool:
        return database.parent.is_dir() and any(database.parent.glob(".stage-*/*"))

    code, log = _signalled_run(tmp_path, inputs, database, signal.SIGTERM, staged)
    assert code == 128 + signal.SIGTERM, log
    assert list(database.parent.iterdir()) == [], log

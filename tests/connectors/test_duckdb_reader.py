"""The auditor's connection is read-only and cannot reach any file but its database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from connectors.duckdb_reader import QueryError, _pin, canned_queries, connect_auditor
from connectors.duckdb_sink import connect_writer
from pipelines.cli import main


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "audit.duckdb"
    con = connect_writer(path)
    con.execute(
        "INSERT INTO quarantine VALUES ('f#1', 't', 'f#1', 'TRUNCATED', 'm', NULL, NULL, 'x'::BLOB)"
    )
    con.close()
    return path


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO quarantine SELECT * FROM quarantine",
        "DELETE FROM quarantine",
        "CREATE TABLE stolen AS SELECT 1",
        "UPDATE quarantine SET message = 'x'",
    ],
)
def test_refuses_writes(database: Path, statement: str) -> None:
    con = connect_auditor(database)
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute(statement)


def test_refuses_file_access(database: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    target = tmp_path / "out.csv"
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    con = connect_auditor(database)
    for statement in [
        f"COPY quarantine TO '{target}'",
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM '{secret}'",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM glob('{tmp_path}/*')",
        f"ATTACH '{other}' AS other",
        f"EXPORT DATABASE '{tmp_path / 'export'}'",
        "INSTALL httpfs",
        "LOAD httpfs",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(statement).fetchall()
    assert not target.exists()
    assert not (tmp_path / "export").exists()


def test_settings_cannot_be_unlocked(database: Path) -> None:
    con = connect_auditor(database)
    for statement in ["SET enable_external_access = true", "SET lock_configuration = false"]:
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(statement)
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (1,)


def test_cli_refuses_and_reports(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "leak.csv"
    assert main(["sql", "--db", str(database), f"COPY quarantine TO '{target}'"]) == 1
    assert "disabled by configuration" in capsys.readouterr().err
    assert not target.exists()
    assert (
        main(["sql", "--db", str(database), "INSERT INTO quarantine SELECT * FROM quarantine"]) == 1
    )
    assert main(["sql", "--db", str(database), "SELECT reason_code FROM quarantine"]) == 0
    assert "TRUNCATED" in capsys.readouterr().out


def test_missing_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "--db", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2
    assert "removal-audit run" in capsys.readouterr().err


def test_canned_queries_declare_their_parameters() -> None:
    queries = canned_queries()
    assert {
        "unresolved_by_category",
        "sla_breach_rate_by_category_month",
        "time_to_action_percentiles",
        "oldest_open_requests",
        "requests_issued",
    } <= set(queries)
    assert queries["unresolved_by_category"].params == {"as_of": None}
    assert queries["oldest_open_requests"].params == {"as_of": None, "limit": "20"}
    with pytest.raises(QueryError, match="required"):
        queries["unresolved_by_category"].bind({})
    with pytest.raises(QueryError, match="unknown"):
        queries["unresolved_by_category"].bind({"as_of": "2021-03-01", "since": "x"})


def test_an_auditor_never_opens_half_of_one_snapshot_and_half_of_the_next(
    tmp_path: Path,
) -> None:
    """DuckDB opens a file several times while connecting; a snapshot renamed over the path
    meanwhile must not pair one copy's header with the next one's blocks (it did: about 3%
    of connections failed with "Could not read enough bytes" under this swapping)."""
    copies = []
    for rows in (1_000, 200_000):
        path = tmp_path / f"copy-{rows}.duckdb"
        con = duckdb.connect(str(path))
        con.execute(f"CREATE TABLE t AS SELECT range AS i, 'x' || range AS s FROM range({rows})")
        con.close()
        copies.append(path)
    snapshot = tmp_path / "snapshot.duckdb"
    shutil.copyfile(copies[0], snapshot)
    stop = threading.Event()

    def publish() -> None:  # as StreamSink.publish_snapshot does, as fast as it can
        k = 0
        while not stop.is_set():
            tmp = tmp_path / ".snapshot.tmp"
            shutil.copyfile(copies[k % 2], tmp)
            os.replace(tmp, snapshot)
            k += 1

    writer = threading.Thread(target=publish)
    writer.start()
    counts = set()
    try:
        for _ in range(200):
            con = connect_auditor(snapshot)
            try:
                counts.add(con.execute("SELECT count(*), sum(i) FROM t").fetchall()[0])
            finally:
                con.close()
    finally:
        stop.set()
        writer.join()
    assert counts <= {(1_000, 499_500), (200_000, 19_999_900_000)}
    assert not list(tmp_path.glob(".snapshot.duckdb.reader-*"))  # the pins are removed


def test_a_pin_is_made_while_snapshots_are_renamed_over_the_path(tmp_path: Path) -> None:
    """os.link fails with ENOENT when the copy it found is unlinked by the rename meanwhile
    (about 1 link in 8 under this swapping); the pin must then be retried, not given up for
    the bare path, which is what let the test above fail now and then."""
    source = tmp_path / "copy"
    source.write_bytes(bytes(100_000))
    snapshot = tmp_path / "snapshot.duckdb"
    shutil.copyfile(source, snapshot)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            tmp = tmp_path / ".snapshot.tmp"
            shutil.copyfile(source, tmp)
            os.replace(tmp, snapshot)

    writer = threading.Thread(target=publish)
    writer.start()
    missed = 0
    try:
        for _ in range(2_000):
            pinned = _pin(snapshot)
            if pinned is None:
                missed += 1
            else:
                shutil.rmtree(pinned.parent)  # the pin's private directory
    finally:
        stop.set()
        writer.join()
    assert missed == 0


_WRITE_INTO_THE_WAL = """
import os, sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SET checkpoint_threshold = '10GB'")
con.execute("CREATE TABLE t AS SELECT 0 AS i")
con.execute("CHECKPOINT")
con.execute("INSERT INTO t SELECT range + 1 FROM range(999)")
con.execute("CREATE TABLE u AS SELECT 1 AS j")
os._exit(0)  # as a killed writer: no checkpoint at close, the commits stay in the WAL
"""


def test_an_auditor_sees_the_rows_committed_into_the_wal(tmp_path: Path) -> None:
    database = tmp_path / "audit.duckdb"
    subprocess.run([sys.executable, "-c", _WRITE_INTO_THE_WAL, str(database)], check=True)
    wal = database.with_name("audit.duckdb.wal")
    assert wal.stat().st_size > 0
    size = database.stat().st_size
    con = connect_auditor(database)
    try:
        assert con.execute("SELECT count(*), sum(i) FROM t").fetchone() == (1_000, 499_500)
        assert con.execute("SELECT count(*) FROM u").fetchone() == (1,)
    finally:
        con.close()
    assert wal.stat().st_size > 0 and database.stat().st_size == size  # read, not replayed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.duckdb", "audit.duckdb.wal"]


def test_a_reader_killed_while_connecting_leaves_nothing_for_good(database: Path) -> None:
    """What a reader makes beside the database lives only while it connects; one killed
    meanwhile leaves it, and the next reader removes it (not a live reader's)."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = database.with_name(f".{database.name}.reader-{int(gone.stdout)}-0badc0de")
    os.link(database, dead)
    live = database.with_name(f".{database.name}.reader-{os.getpid()}-0000beef")
    os.link(database, live)
    connect_auditor(database).close()
    assert not dead.exists()
    assert live.exists()


def test_the_paths_duckdb_lets_a_connection_write_are_gone(database: Path) -> None:
    """With external access off, DuckDB still lets a connection write its database's own
    paths (`<db>.wal`, `<db>.wal.recovery`, ...): a COPY there would leave files beside the
    database, or a WAL the writer replays. The auditor's are the removed pins'."""
    con = connect_auditor(database)
    (listed,) = con.execute(
        "SELECT value FROM duckdb_settings() WHERE name = 'allowed_paths'"
    ).fetchone()
    paths = listed.strip("[]").split(", ")
    assert len(paths) >= 2
    for path in paths:
        with pytest.raises(duckdb.Error):
            con.execute(f"COPY (SELECT 1 AS x) TO '{path}'")
    assert sorted(p.name for p in database.parent.iterdir()) == ["audit.duckdb"]


def test_fingerprint_counts_the_rows_in_the_wal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "audit.duckdb"
    subprocess.run([sys.executable, "-c", _WRITE_INTO_THE_WAL, str(database)], check=True)
    assert main(["fingerprint", "--db", str(database)]) == 0
    rows = {line.split()[0]: int(line.split()[1]) for line in capsys.readouterr().out.splitlines()}
    assert rows == {"t": 1_000, "u": 1}

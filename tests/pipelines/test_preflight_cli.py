"""`removal-audit run` and `publish` refuse a wrong input or database before any pipeline
work: one line on stderr naming it and what the command expects, exit 2."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest

from connectors.avro_files import write_raw_messages, write_records
from connectors.schema_store import SchemaStore
from pipelines.cli import main
from tests.conftest import action, held_by_writer, message, request

EXPECTS = "input files are Avro container files of raw messages"


@pytest.fixture
def raw_file(tmp_path: Path, store: SchemaStore) -> Path:
    """A well-formed input: raw messages, enough of them for several Avro blocks."""
    path = tmp_path / "requests.avro"
    messages = [message(store, request(n, content=f"c{n}")) for n in range(2000)]
    write_raw_messages(path, messages, store)
    with path.open("rb") as source:
        assert sum(1 for _ in fastavro.block_reader(source)) > 2
    return path


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command; it must exit 2 with one line on stderr (no traceback)."""
    status = main(list(argv))
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("removal-audit: ") and err.count("\n") == 1, err
    return err


def test_a_csv_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "demands.csv"
    csv.write_text("request_id,platform\nRKN-1,twitter\n", encoding="utf-8")
    db = tmp_path / "audit.duckdb"
    err = _refused(capsys, "run", str(csv), "--db", str(db))
    assert f"{csv}: not an Avro container file" in err and EXPECTS in err
    assert not db.exists()


def test_a_truncated_container_is_refused(
    raw_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = raw_file.read_bytes()
    raw_file.write_bytes(data[: len(data) // 2])
    err = _refused(capsys, "run", str(raw_file), "--db", str(tmp_path / "audit.duckdb"))
    assert f"{raw_file}: truncated or corrupt Avro container file after record " in err


def test_a_container_of_an_unknown_schema_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.avro"
    schema = {"type": "record", "name": "Reading", "fields": [{"name": "x", "type": "int"}]}
    with other.open("wb") as out:
        fastavro.writer(out, schema, [{"x": 1}])
    err = _refused(capsys, "run", str(other), "--db", str(tmp_path / "audit.duckdb"))
    assert f"{other}: written with record Reading the schema catalog does not know" in err
    assert EXPECTS in err


def test_plain_event_records_are_refused_with_how_to_make_raw_messages(
    raw_file: Path, tmp_path: Path, store: SchemaStore, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "actions.avro"
    write_records(events, "removal.actions-value", [action(1).to_avro()], store)
    # A directory holding one good file and the event file: the event file is named.
    err = _refused(capsys, "run", str(tmp_path), "--db", str(tmp_path / "audit.duckdb"))
    assert f"{events}: holds plain removal.actions-value v1 events, not raw messages" in err
    assert "`removal-audit generate`" in err


def test_publish_checks_its_inputs_before_the_broker(
    tmp_path: Path, store: SchemaStore, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "requests.avro"
    write_records(events, "removal.requests-value", [request(1).to_avro()], store)
    # No broker listens on port 1: only a check made before connecting gives this answer.
    err = _refused(capsys, "publish", str(events), "--bootstrap-servers", "127.0.0.1:1")
    assert f"{events}: holds plain removal.requests-value v2 events" in err


def test_a_directory_as_database_is_refused(
    raw_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    err = _refused(capsys, "run", str(raw_file), "--db", str(folder))
    assert f"database {folder} is a directory" in err


def test_a_file_that_is_not_duckdb_is_refused_and_kept(
    raw_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.duckdb"
    notes.write_text("not a database\n" * 100, encoding="utf-8")
    err = _refused(capsys, "run", str(raw_file), "--db", str(notes))
    assert f"database {notes} cannot be opened for writing" in err
    assert "not a valid DuckDB database file" in err
    assert notes.read_text(encoding="utf-8") == "not a database\n" * 100


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """An existing database file nobody may write, root included (chattr +i)."""
    import duckdb

    path = tmp_path / "frozen.duckdb"
    duckdb.connect(str(path)).close()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not permitted here")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_immutable_database_is_refused(
    raw_file: Path, immutable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "run", str(raw_file), "--db", str(immutable))
    assert f"database {immutable} cannot be opened for writing" in err
    assert "Operation not permitted" in err


def test_a_database_another_process_writes_is_refused(
    raw_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.duckdb"
    with held_by_writer(db) as holder:
        err = _refused(capsys, "run", str(raw_file), "--db", str(db))
    assert f"database {db} is open in another process" in err
    assert f"PID {holder.pid}" in err


def test_the_database_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    from pipelines.preflight import check_database

    check_database(tmp_path / "new" / "deeper" / "audit.duckdb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("run", "--source", "kafka", "--prism-location", "no-prism-here"),
        ("demo", "--data-dir", "data"),
    ],
    ids=["streaming", "demo"],
)
def test_the_streaming_job_and_the_demo_check_the_database_first(
    argv: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "db").mkdir()
    err = _refused(capsys, *argv, "--db", "db")
    assert "database db is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # nothing generated

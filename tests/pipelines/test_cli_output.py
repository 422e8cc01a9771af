"""What the `removal-audit` commands print: a one-line error for an unknown scenario, a
short summary of `generate`, nothing but the output into a pipe closed early, no Great
Expectations chatter; and `validate --holds` only reads the database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from connectors.avro_files import scan_container, write_raw_messages
from connectors.duckdb_sink import connect_writer
from connectors.schema_store import SchemaStore
from pipelines.cli import main
from tests.conftest import action, message, request

COMMAND = Path(sys.executable).parent / "removal-audit"


@pytest.fixture
def empty_audit(tmp_path: Path) -> Path:
    """An audit database with the schema and no rows."""
    path = tmp_path / "audit.duckdb"
    connect_writer(path).close()
    return path


def test_an_unknown_scenario_is_one_line_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["generate", "--scenario", "nope", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "removal-audit: unknown scenario 'nope'; known: roskomnadzor-twitter-2021\n"
    assert list(tmp_path.iterdir()) == []


def test_generate_says_what_it_wrote_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "data"
    assert main(["generate", "--out", str(out_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 5 and max(len(line) for line in lines[1:]) <= 100, lines
    assert lines[0].startswith("generated scenario roskomnadzor-twitter-2021 (seed 2021) in ")
    assert lines[0].endswith(f", in {out_dir}:")
    for name, line in zip(("requests.avro", "actions.avro"), lines[1:3], strict=True):
        written = scan_container(out_dir / name).records
        assert line.split() == [name, f"{written:,}", "messages"]
    assert "published figures reproduced" in lines[-1]


def _into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with its stdout's reader gone before it writes a byte."""
    proc = subprocess.Popen(
        [str(COMMAND), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=300), "", err)


@pytest.mark.parametrize(
    "argv", [("alerts", "--all"), ("validate", "--read-only")], ids=["alerts", "validate"]
)
def test_output_into_a_closed_pipe_ends_quietly(empty_audit: Path, argv: tuple[str, ...]) -> None:
    done = _into_closed_pipe(*argv, "--db", str(empty_audit))
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr


def _state(path: Path) -> tuple[int, str]:
    return os.stat(path).st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_listing_holds_leaves_the_database_as_it_was(
    empty_audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _state(empty_audit)
    assert main(["validate", "--db", str(empty_audit), "--holds"]) == 0
    assert capsys.readouterr().out == "no held batches\n"
    assert _state(empty_audit) == before


def test_a_batch_load_does_not_log_great_expectations_temporary_directories(
    tmp_path: Path, store: SchemaStore, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = tmp_path / "data"
    inputs.mkdir()
    write_raw_messages(inputs / "requests.avro", [message(store, request(1))], store)
    write_raw_messages(inputs / "actions.avro", [message(store, action(1, hours=2))], store)
    assert main(["run", str(inputs), "--db", str(tmp_path / "audit.duckdb")]) == 0
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith("great_expectations")]
    assert not [m for m in chatter if "Created temporary directory" in m], chatter


def test_fingerprint_of_a_database_without_tables_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.duckdb"
    duckdb.connect(str(path)).close()
    assert main(["fingerprint", "--db", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"removal-audit: {path} holds no tables: nothing has landed in it "
        "(run `removal-audit run` first)\n"
    )

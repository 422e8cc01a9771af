"""`removal-audit sql`: --file reads SQL text only and never echoes what it read; the shell
runs a last statement without ';' and exits nonzero after a failing statement; CSV lines end
with '\\n'; output cut short by its reader (`| head`) is no error trace."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.duckdb_sink import connect_writer
from pipelines.cli import main
from tests.conftest import held_by_writer

SECRET = "root:$6$hunter2SECRETsalt$k9"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "audit.duckdb"
    connect_writer(path).close()
    return path


@pytest.mark.parametrize(
    "content",
    [
        (SECRET + "\ndaemon:*:19000:0:99999:7:::\n").encode(),
        b"SELECT 1 AS \xff\xfe" + SECRET.encode(),
    ],
    ids=["not-sql", "not-utf8"],
)
def test_a_file_that_is_not_sql_text_is_refused_unread(
    database: Path, tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "shadow"
    file.write_bytes(content)
    assert main(["sql", "--db", str(database), "--file", str(file)]) == 2
    captured = capsys.readouterr()
    assert "hunter2" not in captured.out + captured.err
    assert captured.err.startswith("removal-audit: ") and captured.err.count("\n") == 1


def test_a_directory_is_refused(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "--db", str(database), "--file", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "directory" in err and err.count("\n") == 1


def test_a_file_of_sql_runs(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "audit.sql"
    file.write_text("-- how many\nSELECT count(*) AS n FROM quarantine;\n")
    assert main(["sql", "--db", str(database), "--file", str(file), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n0\n"


def _shell(
    database: Path, script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code = main(["sql", "--db", str(database), "--format", "csv"])
    return code, capsys.readouterr().out


def test_the_shell_exits_nonzero_after_a_failing_statement(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _shell(
        database, "SELECT 1 AS a;\nSELECT nope;\nSELECT 2 AS b;\n", monkeypatch, capsys
    )
    assert code == 1
    assert out.startswith("a\n1\nerror: ") and out.endswith("b\n2\n")  # it went on


def test_the_shell_runs_a_last_statement_without_semicolon(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _shell(
        database, "SELECT 1 AS a;\nSELECT 41 + 1\n  AS answer\n", monkeypatch, capsys
    )
    assert (code, out) == (0, "a\n1\nanswer\n42\n")


def test_csv_lines_end_with_a_newline_only(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "--db", str(database), "--format", "csv", "SELECT 1 AS a, 'x' AS b"]) == 0
    assert capsys.readouterr().out == "a,b\n1,x\n"


def test_output_cut_short_by_its_reader_is_no_error(database: Path) -> None:
    command = [
        sys.executable,
        "-c",
        "from pipelines.cli import entry; entry()",
        "sql",
        "--db",
        str(database),
        "SELECT range AS i FROM range(300000)",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        assert run.stdout is not None and run.stderr is not None
        assert run.stdout.readline().split() == [b"i"]
        run.stdout.close()  # as `head -1` does
        err = run.stderr.read().decode()
        run.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert run.returncode == 141  # 128 + SIGPIPE, as a shell reports for `cat`


def test_a_database_held_by_a_writer_is_refused_by_its_name(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with held_by_writer(database):
        status = main(["sql", "--db", str(database), "SELECT 1"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"removal-audit: {database} is open in ")
    assert "snapshot" in err and ".reader-" not in err

"""An auditor's session has a memory limit, a temporary-space limit and a statement timeout
(settings REMOVAL_AUDIT_AUDITOR_*); each refusal is one line naming its setting. Spills go to
a private directory, not the database's, and settings show no machine paths."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from connectors.duckdb_limits import AuditorLimits
from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_sink import connect_writer
from pipelines.cli import main

# Spills about 200 MB (measured) under a 64 MB memory limit.
_SPILLING = (
    "SELECT count(*) FROM "
    "(SELECT md5(range::varchar) k, list(range) FROM range(3000000) GROUP BY k)"
)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "db" / "audit.duckdb"
    path.parent.mkdir()
    connect_writer(path).close()
    return path


def _sql(
    database: Path, statement: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = main(["sql", "--db", str(database), statement])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_statement_running_too_long_is_stopped(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_AUDITOR_STATEMENT_TIMEOUT_SECONDS", "0.5")
    started = time.monotonic()
    code, _, err = _sql(database, "SELECT count(*) FROM range(1000000000000)", capsys)
    assert time.monotonic() - started < 10
    assert code == 1
    assert err == (
        "removal-audit: query stopped after 0.5 s "
        "(REMOVAL_AUDIT_AUDITOR_STATEMENT_TIMEOUT_SECONDS)\n"
    )
    code, out, _ = _sql(database, "SELECT 42 AS answer", capsys)  # not interrupted later
    assert code == 0 and "42" in out


def test_a_statement_needing_too_much_memory_is_stopped(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_AUDITOR_MEMORY_LIMIT_MB", "64")
    code, _, err = _sql(database, "SELECT list(range) FROM range(50000000)", capsys)
    assert code == 1
    assert err == (
        "removal-audit: query stopped: it needs more than 64 MB of memory "
        "(REMOVAL_AUDIT_AUDITOR_MEMORY_LIMIT_MB)\n"
    )


def test_a_statement_spilling_too_much_is_stopped(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_AUDITOR_MEMORY_LIMIT_MB", "64")
    monkeypatch.setenv("REMOVAL_AUDIT_AUDITOR_TEMP_LIMIT_MB", "16")
    code, _, err = _sql(database, _SPILLING, capsys)
    assert code == 1
    assert err == (
        "removal-audit: query stopped: it needs more than 16 MB of temporary disk space "
        "(REMOVAL_AUDIT_AUDITOR_TEMP_LIMIT_MB)\n"
    )


def test_settings_show_no_machine_paths(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The only paths left are the pins' removed directory and the private spill directory:
    with external access off, DuckDB lists them (allowed_paths, allowed_directories,
    temp_directory) and refuses to change them."""
    code = main(
        [
            "sql",
            "--db",
            str(database),
            "--format",
            "json",
            "SELECT name, value FROM duckdb_settings()",
        ]
    )
    assert code == 0
    values = {r["name"]: r["value"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for name in (
        "secret_directory",
        "home_directory",
        "extension_directory",
        "extension_directories",
    ):
        assert values.get(name, "") in ("", "[]"), name
    spill = Path(values["temp_directory"])
    assert spill.parent == Path(tempfile.gettempdir()) and spill.name.startswith(
        "removal-audit-auditor-"
    )
    for name, value in values.items():
        for path in map(Path, re.findall(r"(?:^|(?<=[\[ ]))/[^,\]\s]+", value or "")):
            pinned = path.is_relative_to(database.parent) and path.parent.name.startswith(
                ".audit.duckdb.reader-"
            )
            assert path.is_relative_to(spill) or pinned, (name, value)
    assert values["max_temp_directory_size"] == "3.8 GiB"  # 4096 MB
    assert values["memory_limit"] == "1.9 GiB"  # 2048 MB


def test_spills_go_to_a_private_directory_removed_with_the_connection(database: Path) -> None:
    con = connect_auditor(database, AuditorLimits(memory_limit_mb=64))
    (spill,) = con.execute(
        "SELECT value FROM duckdb_settings() WHERE name = 'temp_directory'"
    ).fetchone()
    spill = Path(spill)
    assert con.execute(_SPILLING).fetchone() == (3_000_000,)
    assert spill.is_dir() and spill.stat().st_mode & 0o077 == 0
    assert not spill.is_relative_to(database.parent)
    con.close()
    del con
    gc.collect()
    assert not spill.exists()
    assert sorted(p.name for p in database.parent.iterdir()) == ["audit.duckdb"]


def test_the_spill_directory_of_a_killed_reader_is_removed(database: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = Path(tempfile.gettempdir()) / f"removal-audit-auditor-{int(gone.stdout)}-0badc0de"
    stale.mkdir()
    (stale / "duckdb_temp_block-1.block").write_bytes(b"x")
    live = Path(tempfile.gettempdir()) / f"removal-audit-auditor-{os.getpid()}-0000beef"
    live.mkdir()
    try:
        connect_auditor(database).close()
        assert not stale.exists()
        assert live.exists()
    finally:
        live.rmdir()

"""What a failed bench step leaves behind once its work directory is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run


def test_a_failed_streaming_step_keeps_its_logs_and_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    monkeypatch.setattr(run, "OUT", out)
    (work / "stream.log").write_text("stuck\n")
    (work / "stream.duckdb").write_bytes(b"db")
    (work / "floor.duckdb").write_bytes(b"floor")

    run._keep_failed({"floor": {"rate": 1.0}, "streaming": {"seconds": 1.0}}, work, 10)
    assert list(out.iterdir()) == []  # nothing failed

    run._keep_failed({"floor": {"rate": 1.0}, "streaming": {"error": "exited 1"}}, work, 10)
    assert sorted(p.name for p in out.iterdir()) == [
        "failed-10-stream.duckdb",
        "failed-10-stream.log",
    ]

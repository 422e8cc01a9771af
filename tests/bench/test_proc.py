"""Measured subprocesses: how a failed one ended is reported, not only its output."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.proc import run_measured


def _run(code: str, tmp_path: Path) -> str:
    measured = run_measured([sys.executable, "-c", code], log=tmp_path / "log", timeout=60)
    return measured.failure("the job")


def test_a_job_killed_by_a_signal_is_reported_by_the_signal_not_its_last_words(
    tmp_path: Path,
) -> None:
    # What the kernel's out-of-memory killer does: SIGKILL, nothing said.
    said = _run("import os, signal; print('warning ' * 500); os.kill(os.getpid(), 9)", tmp_path)
    assert said.startswith("the job was killed by SIGKILL after "), said
    assert "peak RSS" in said.splitlines()[0] and said.endswith("warning \n")


def test_a_job_that_exits_non_zero_is_reported_with_its_status(tmp_path: Path) -> None:
    said = _run("import sys; print('bad input'); sys.exit(3)", tmp_path)
    assert said.startswith("the job exited with status 3 after "), said
    assert said.endswith("bad input\n")

"""Limits of an auditor's session: memory, temporary disk space, time per statement.

DuckDB enforces the first two (`memory_limit`, `max_temp_directory_size`, spilling into a
private directory, not the database's); it has no statement timeout, so `enforced`
interrupts a statement from a timer thread. Each refusal becomes a `QueryStopped` whose
one-line message names the setting to raise.

Example:
    with enforced(con, AuditorLimits(statement_timeout_s=5)):
        con.execute("SELECT count(*) FROM range(1e12)").fetchall()   # QueryStopped after 5 s
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

MEMORY_SETTING = "REMOVAL_AUDIT_AUDITOR_MEMORY_LIMIT_MB"
TEMP_SETTING = "REMOVAL_AUDIT_AUDITOR_TEMP_LIMIT_MB"
TIMEOUT_SETTING = "REMOVAL_AUDIT_AUDITOR_STATEMENT_TIMEOUT_SECONDS"


class QueryStopped(RuntimeError):
    """An auditor's statement stopped by one of the session's limits."""


@dataclass(frozen=True)
class AuditorLimits:
    memory_limit_mb: int = 2048
    temp_limit_mb: int = 4096
    statement_timeout_s: float = 300.0


@contextmanager
def enforced(con: duckdb.DuckDBPyConnection, limits: AuditorLimits) -> Iterator[None]:
    """Run the block (statements on `con` and the fetching of their rows) under the
    statement timeout; a limit's refusal is raised as `QueryStopped`."""
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def interrupt() -> None:
        # Under the lock, so the interruption cannot land once the block has ended (on an
        # idle connection, or on the caller's next statement).
        with lock:
            if state["running"]:
                state["fired"] = True
                con.interrupt()

    timer = threading.Timer(limits.statement_timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if not state["fired"]:
            raise
        raise QueryStopped(
            f"query stopped after {limits.statement_timeout_s:g} s ({TIMEOUT_SETTING})"
        ) from None
    except duckdb.OutOfMemoryException as error:
        # DuckDB names the setting whose limit was reached in its message.
        if "max_temp_directory_size" in str(error):
            raise QueryStopped(
                f"query stopped: it needs more than {limits.temp_limit_mb} MB of temporary "
                f"disk space ({TEMP_SETTING})"
            ) from None
        raise QueryStopped(
            f"query stopped: it needs more than {limits.memory_limit_mb} MB of memory "
            f"({MEMORY_SETTING})"
        ) from None
    finally:
        with lock:
            state["running"] = False
        timer.cancel()

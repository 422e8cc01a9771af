"""Waiting for a worker thread that still holds a DuckDB connection.

A connection must not be closed while another thread is inside it, so the writer and the
alert delivery wait for their threads however long they take, and say so while they wait.
(A connection still held by a live thread at interpreter shutdown aborts the process,
duckdb/duckdb#13904; after a streaming job the runner's threads can do the same, which is
why `pipelines.cli.entry` ends such a process without finalization.)
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


def join_patiently(thread: threading.Thread, doing: str, warn_every_s: float = 30.0) -> None:
    """Wait until `thread` has ended, logging a warning every `warn_every_s` seconds that
    names what it is still `doing`. A thread that has already ended returns at once."""
    started = time.monotonic()
    thread.join(warn_every_s)
    while thread.is_alive():
        log.warning(
            "waiting %.0f s so far for the thread %s to finish %s",
            time.monotonic() - started,
            thread.name,
            doing,
        )
        thread.join(warn_every_s)

"""The shared writer lands what bundles submit in micro-batches from its own thread,
publishes the snapshot even when no more batches come, and stops the job on a failure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_stream_sink import LandingBatch
from connectors.duckdb_stream_writer import SharedWriter, WriterConfig, WriterFailed
from pipelines.rows import SCHEMAS

DUPLICATE = {"source_ref": "", "topic": "removal.requests", "event_id": "", "kept_source_ref": "x"}


@dataclass
class Rows:
    """Duplicate-delivery rows at offsets of partition 0 (the simplest table to land)."""

    offsets: list[int]
    watermark: datetime | None = None
    broken: bool = False
    merges: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)

    def merge(self, later: Rows) -> None:
        self.merges.append(len(later))
        self.offsets += later.offsets
        self.broken = self.broken or later.broken

    def batch(self) -> LandingBatch:
        rows: list[dict[str, Any]] = [
            {**DUPLICATE, "source_ref": f"removal.requests/0#{o}", "event_id": f"e{o}"}
            for o in self.offsets
        ]
        table = pa.Table.from_pylist(rows, schema=SCHEMAS["duplicate_deliveries"])
        if self.broken:
            table = table.drop_columns(["topic"])
        offsets = {("removal.requests", 0): [(o, o) for o in self.offsets]}
        return LandingBatch.covering(offsets, {"duplicate_deliveries": table})


def _count(path: Path) -> int:
    con = connect_auditor(path)
    try:
        row: Any = con.execute("SELECT count(*) FROM duplicate_deliveries").fetchone()
        return int(row[0])
    finally:
        con.close()


def test_bundles_land_together_and_the_snapshot_follows(tmp_path: Path) -> None:
    config = WriterConfig(
        tmp_path / "a.duckdb", tmp_path / "s.duckdb", snapshot_every_s=0.2, flush_every_s=3600
    )
    writer = SharedWriter.acquire(config)
    assert SharedWriter.acquire(config) is writer  # one writer per database and process
    first = Rows([0, 1])
    writer.submit(first)
    writer.submit(Rows([2]))
    assert first.merges == [1]  # absorbed while waiting: one transaction for both
    assert writer.flush()
    assert not writer.flush()  # nothing waiting
    deadline = time.monotonic() + 10
    while not config.snapshot.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # published by the writer thread, no batch needed to trigger it
    assert _count(config.snapshot) == 3
    writer.submit(Rows([3]))
    SharedWriter.release(config)
    assert config.database.exists() and _count(config.snapshot) == 3  # one user left
    SharedWriter.release(config)  # the last one: flush, publish, close
    assert _count(config.snapshot) == 4
    assert _count(config.database) == 4


def test_a_failed_landing_stops_the_job(tmp_path: Path) -> None:
    config = WriterConfig(
        tmp_path / "a.duckdb", tmp_path / "s.duckdb", snapshot_every_s=60, flush_every_s=0.05
    )
    writer = SharedWriter.acquire(config)
    try:
        writer.submit(Rows([0], broken=True))
        with pytest.raises(WriterFailed, match="landing in"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                writer.submit(Rows([1]))
                time.sleep(0.05)
    finally:
        SharedWriter.release(config)
    # Nothing of the failed batch landed; what followed it was not landed either, so a
    # restart resumes at offset 0.
    assert _count(config.database) == 0

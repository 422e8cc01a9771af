"""Staging: rows a batch pipeline finished, written as Parquet for `duckdb_sink.land_batch`.

In: (table, part, rows) elements. Out: one file `<stage>/<table>-<part>.parquet` per
element, with the table's Arrow schema. The name is a function of the element, so a
bundle the runner retries rewrites the same file rather than adding a second copy; the
file appears under its name only once complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq


def stage_file(stage: Path, table: str, part: str) -> Path:
    """Where `land_batch` finds the part (it reads `<table>-*.parquet`)."""
    return stage / f"{table}-{part}.parquet"


def write_staged(
    stage: Path, schema: pa.Schema, table: str, part: str, rows: Sequence[Mapping[str, Any]]
) -> Path:
    """Write `rows` (dicts by column name) as the table's part; return the file."""
    path = stage_file(stage, table, part)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), partial)
    os.replace(partial, path)
    return path


class _WriteStagedFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, stage: Path, schemas: Mapping[str, pa.Schema]) -> None:
        self._stage = stage
        self._schemas = dict(schemas)

    def process(self, element: tuple[str, str, Sequence[Mapping[str, Any]]]) -> Iterable[str]:
        table, part, rows = element
        yield str(write_staged(self._stage, self._schemas[table], table, part, rows))


class WriteStagedRows(beam.PTransform):  # type: ignore[misc]
    """(table, part, rows) -> the Parquet file written, one per element. `schemas`: the
    Arrow schema of every table (an unknown table fails the bundle, never drops rows)."""

    def __init__(self, stage: Path, schemas: Mapping[str, pa.Schema]) -> None:
        super().__init__()
        self._stage = stage
        self._schemas = schemas

    def expand(self, staged: Any) -> Any:
        return staged | "WriteParquet" >> beam.ParDo(_WriteStagedFn(self._stage, self._schemas))

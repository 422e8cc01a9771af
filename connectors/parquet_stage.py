"""Staging: rows a batch pipeline finished, written as Parquet for `duckdb_sink.land_batch`,
and the work in progress it shuffles between steps, spilled beside them.

In: (table, part, rows) elements. Out: one file `<stage>/<table>-<part>.parquet` per
element, with the table's Arrow schema. The name is a function of the element, so a
bundle the runner retries rewrites the same file rather than adding a second copy; the
file appears under its name only once complete.

`SpillWriter` / `read_spilled`: a step hands its successor files, not elements, because
Beam's local runner holds a whole PCollection in memory between stages (decoded, for a
GroupByKey); a shuffle of (bucket, spill file) pairs costs it next to nothing.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

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


class SpillWriter:
    """One bundle's share of a shuffle, spilled to files: `<folder>/<bucket>-<token>.pkl`,
    one file per bucket, each a run of pickled frames (lists of plain tuples). A file
    appears under its name only once `close` has returned it, so a retried bundle (another
    token) leaves no partial file behind for a consumer.

    Example: SpillWriter(stage / "deliveries", "7f3a...").write(3, [(0, (...), ...), ...])
    """

    def __init__(self, folder: Path, token: str) -> None:
        self._folder = folder
        self._token = token
        self._files: dict[int, BinaryIO] = {}

    def write(self, bucket: int, items: Sequence[Any]) -> None:
        """Append `items` as one frame of `bucket`'s file."""
        out = self._files.get(bucket)
        if out is None:
            self._folder.mkdir(parents=True, exist_ok=True)
            out = self._files[bucket] = open(self._partial(bucket), "wb")  # noqa: SIM115
        pickle.dump(items, out, protocol=5)

    def close(self) -> list[tuple[int, str]]:
        """Complete every file; (bucket, path) of each, by bucket."""
        done = []
        for bucket, out in sorted(self._files.items()):
            out.close()
            path = self._folder / f"{bucket:05d}-{self._token}.pkl"
            os.replace(self._partial(bucket), path)
            done.append((bucket, str(path)))
        self._files.clear()
        return done

    def _partial(self, bucket: int) -> Path:
        return self._folder / f".{bucket:05d}-{self._token}.pkl.partial"


def read_spilled(paths: Iterable[str]) -> Iterator[list[Any]]:
    """The frames of the spill files at `paths`, file by file, in the order written."""
    for path in paths:
        with open(path, "rb") as spilled:
            while True:
                try:
                    yield pickle.load(spilled)
                except EOFError:
                    break

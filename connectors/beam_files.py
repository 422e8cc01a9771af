"""Beam source over Avro container files of raw messages (the embedded default's input)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam

from connectors.avro_files import RawMessage, read_raw_messages
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore


class _ReadFileFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, schemas_dir: Path | None) -> None:
        self._schemas_dir = schemas_dir

    def setup(self) -> None:
        self._store = SchemaStore.load(self._schemas_dir)

    def process(self, path: str) -> Iterator[tuple[SourceRef, RawMessage]]:
        name = Path(path).name
        for position, message in read_raw_messages(Path(path), self._store):
            yield SourceRef(name, position), message


class ReadRawMessages(beam.PTransform):  # type: ignore[misc]
    """Files -> (SourceRef(file name, record index), RawMessage), one element per message.

    The file name (not its directory) identifies the source, so the same files read from
    another directory land the same rows. `schemas_dir`: the schema catalog the files are
    read with (None: the packaged one).
    """

    def __init__(self, paths: Sequence[Path], schemas_dir: Path | None = None) -> None:
        super().__init__()
        self._paths = sorted(str(p) for p in paths)
        self._schemas_dir = schemas_dir

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "ReadMessages" >> beam.ParDo(_ReadFileFn(self._schemas_dir))
            | "Spread" >> beam.Reshuffle()
        )

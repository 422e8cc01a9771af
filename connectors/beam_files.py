"""Beam sources over Avro container files of raw messages (the embedded default's input).

Two shapes: `ReadRawMessages`, one element per message (for transforms that take one
message at a time), and `ReadMessageChunks`, one element per run of consecutive messages
of a file, for a batch pipeline that must not pay the runner's per-element cost per record.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam

from connectors.avro_files import RawMessage, read_raw_messages
from connectors.origin import SourceRef, file_sources
from connectors.schema_store import SchemaStore

# Messages per chunk: large enough that the runner's cost per element vanishes, small
# enough that a chunk's messages and results sit comfortably in a worker's memory.
CHUNK_SIZE = 4096


class _ReadFileFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, schemas_dir: Path | None) -> None:
        self._schemas_dir = schemas_dir

    def setup(self) -> None:
        self._store = SchemaStore.load(self._schemas_dir)

    def process(self, element: tuple[str, str]) -> Iterator[tuple[SourceRef, RawMessage]]:
        name, path = element
        for position, message in read_raw_messages(Path(path), self._store):
            yield SourceRef(name, position), message


class ReadRawMessages(beam.PTransform):  # type: ignore[misc]
    """Files -> (SourceRef(file name, record index), RawMessage), one element per message.

    The file's name among the inputs (`origin.file_sources`: its path below their common
    directory) identifies the source, so the same files read from another directory land
    the same rows, and two inputs named alike in different directories stay apart.
    `schemas_dir`: the schema catalog the files are read with (None: the packaged one).
    """

    def __init__(self, paths: Sequence[Path], schemas_dir: Path | None = None) -> None:
        super().__init__()
        self._paths = [(name, str(path)) for name, path in file_sources(paths).items()]
        self._schemas_dir = schemas_dir

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "ReadMessages" >> beam.ParDo(_ReadFileFn(self._schemas_dir))
            | "Spread" >> beam.Reshuffle()
        )


@dataclass(frozen=True)
class MessageChunk:
    """Consecutive messages of one file: `messages[i]` is record `first + i` of the file
    named `source`. `part` names the chunk uniquely within a run (the file's rank among the
    inputs and `first`), e.g. for files the chunk's results are written to.

    Example: MessageChunk(part="00001-000004096", source="requests.avro", first=4096,
    messages=(RawMessage("removal.requests", b"twitter/1361", b"\\xc3\\x01...", None), ...))
    """

    part: str
    source: str
    first: int
    messages: tuple[RawMessage, ...]

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[tuple[SourceRef, RawMessage]]:
        """(SourceRef(source, position), message) for each message, in file order."""
        for offset, message in enumerate(self.messages):
            yield SourceRef(self.source, self.first + offset), message


class MessageChunkCoder(beam.coders.Coder):  # type: ignore[misc]
    """A chunk as one pickle of plain tuples: Beam's default coder would pickle each
    message object on its own, which costs more than reading it did."""

    def estimate_size(self, chunk: MessageChunk) -> int:
        # The runner samples element sizes for its metrics; the default would encode.
        return sum(len(m.value) + len(m.key or b"") + len(m.topic) + 16 for m in chunk.messages)

    def encode(self, chunk: MessageChunk) -> bytes:
        messages = [(m.topic, m.key, m.value, m.timestamp) for m in chunk.messages]
        return pickle.dumps((chunk.part, chunk.source, chunk.first, messages), protocol=5)

    def decode(self, encoded: bytes) -> MessageChunk:
        part, source, first, messages = pickle.loads(encoded)
        return MessageChunk(part, source, first, tuple(RawMessage(*m) for m in messages))

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type[MessageChunk]:
        return MessageChunk


beam.coders.registry.register_coder(MessageChunk, MessageChunkCoder)


class _ReadChunksFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, schemas_dir: Path | None, chunk_size: int) -> None:
        self._schemas_dir = schemas_dir
        self._chunk_size = chunk_size

    def setup(self) -> None:
        self._store = SchemaStore.load(self._schemas_dir)

    def process(self, element: tuple[int, str, str]) -> Iterator[MessageChunk]:
        rank, name, path = element
        first, messages = 0, list[RawMessage]()
        for position, message in read_raw_messages(Path(path), self._store):
            if not messages:
                first = position
            messages.append(message)
            if len(messages) == self._chunk_size:
                yield MessageChunk(f"{rank:05d}-{first:09d}", name, first, tuple(messages))
                messages = []
        if messages:
            yield MessageChunk(f"{rank:05d}-{first:09d}", name, first, tuple(messages))


class ReadMessageChunks(beam.PTransform):  # type: ignore[misc]
    """Files -> MessageChunk: up to `chunk_size` consecutive messages of one file per
    element, each message addressed as in `ReadRawMessages` (file name, record index).

    `spread`: shuffle the chunks so that every worker takes in a share of a big file, not
    only the worker that read it. Worth its cost (every message encoded once more) only on
    a runner with several workers; Beam's in-process runner has one.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        schemas_dir: Path | None = None,
        chunk_size: int = CHUNK_SIZE,
        *,
        spread: bool = False,
    ) -> None:
        super().__init__()
        self._paths = [
            (rank, name, str(path)) for rank, (name, path) in enumerate(file_sources(paths).items())
        ]
        self._schemas_dir = schemas_dir
        self._chunk_size = chunk_size
        self._spread = spread

    def expand(self, pbegin: Any) -> Any:
        chunks = (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "ReadChunks"
            >> beam.ParDo(_ReadChunksFn(self._schemas_dir, self._chunk_size)).with_output_types(
                MessageChunk
            )
        )
        if self._spread:
            chunks = chunks | "Spread" >> beam.Reshuffle().with_output_types(MessageChunk)
        return chunks

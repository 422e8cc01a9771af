"""Where a message came from, so every landed or quarantined row can be traced back."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.pickling import compact_pickle


@compact_pickle  # Beam pickles one with every record it moves between stages
@dataclass(frozen=True, slots=True)
class SourceRef:
    """A file and record index, e.g. SourceRef("requests.avro", 17) -> "requests.avro#17";
    the Kafka source uses "topic/partition" and the offset."""

    source: str
    position: int

    @property
    def ref(self) -> str:
        return f"{self.source}#{self.position}"

    @classmethod
    def parse(cls, ref: str) -> SourceRef:
        """The inverse of `ref`. Example: SourceRef.parse("removal.actions/2#17")."""
        source, _, position = ref.rpartition("#")
        return cls(source, int(position))


def file_sources(paths: Iterable[Path]) -> dict[str, Path]:
    """Each input file once, by the name its records are addressed by: its path relative to
    the deepest directory holding every input, with "/" between parts. Files of one
    directory keep their bare names ("requests.avro"); `a/requests.avro` and
    `b/requests.avro` stay apart. The names depend only on where the files sit relative to
    each other, so the same tree read from another place lands the same rows. Sorted by
    name; a file given twice (under any spelling) is read once."""
    files = sorted({Path(p).resolve() for p in paths})
    if not files:
        return {}
    root = Path(os.path.commonpath([f.parent for f in files]))
    return dict(sorted((f.relative_to(root).as_posix(), f) for f in files))

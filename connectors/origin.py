"""Where a message came from, so every landed or quarantined row can be traced back."""

from __future__ import annotations

from dataclasses import dataclass

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

"""Where a message came from, so every landed or quarantined row can be traced back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A file and record index, e.g. SourceRef("requests.avro", 17) -> "requests.avro#17";
    the Kafka source uses "topic/partition" and the offset."""

    source: str
    position: int

    @property
    def ref(self) -> str:
        return f"{self.source}#{self.position}"

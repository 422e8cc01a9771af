"""Source offsets covered by landed streaming batches: runs of offsets per partition, and
where a restarted read resumes.

A batch covers the offsets of the records whose rows (event, duplicate or quarantine) it
lands; the streaming path lands records out of offset order, so coverage is a set of runs
and a partition resumes at its first offset not covered, not after its largest one.

Example:
    offset_runs([("t", 0, 5), ("t", 0, 6), ("t", 0, 9)]) == {("t", 0): ((5, 6), (9, 9))}
    first_uncovered(5, [(5, 6), (9, 9)]) == 7
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

PartitionKey = tuple[str, int]  # (Kafka topic, partition)
Run = tuple[int, int]  # first and last offset, inclusive
Offsets = Mapping[PartitionKey, Sequence[Run]]


def partition_of(source: str) -> PartitionKey:
    """The (topic, partition) of a Kafka SourceRef source. Example: "removal.actions/2" ->
    ("removal.actions", 2). Raises ValueError for a source that is not a Kafka partition."""
    topic, sep, partition = source.rpartition("/")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"not a Kafka source (topic/partition): {source!r}")
    return topic, int(partition)


def offset_runs(positions: Iterable[tuple[str, int, int]]) -> dict[PartitionKey, tuple[Run, ...]]:
    """(topic, partition, offset) triples -> sorted runs of consecutive offsets per partition."""
    by_partition: dict[PartitionKey, set[int]] = defaultdict(set)
    for topic, partition, offset in positions:
        by_partition[(topic, partition)].add(offset)
    return {key: merge_runs((o, o) for o in offsets) for key, offsets in by_partition.items()}


def merge_runs(runs: Iterable[Run]) -> tuple[Run, ...]:
    """Sorted, overlapping or adjacent runs joined. Example: [(4, 9), (0, 3)] -> ((0, 9),)."""
    merged: list[Run] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def normalise(
    offsets: Mapping[PartitionKey, Sequence[Run] | Run],
) -> dict[PartitionKey, tuple[Run, ...]]:
    """Accept one run or several per partition: {k: (0, 9)} == {k: [(0, 9)]}."""
    out: dict[PartitionKey, tuple[Run, ...]] = {}
    for key, value in offsets.items():
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            runs: Iterable[Run] = [value]  # type: ignore[list-item]
        else:
            runs = value  # type: ignore[assignment]
        out[key] = merge_runs(runs)
    return out


def first_uncovered(start: int, runs: Sequence[Run]) -> int:
    """The first offset >= start that no run covers (runs merged and sorted)."""
    position = start
    for first, last in merge_runs(runs):
        if first > position:
            break
        position = max(position, last + 1)
    return position

"""Batches across the streaming path's stateful boundaries: one element per key per bundle.

On Prism every element that enters a stateful stage is encoded, framed over the data plane
and decoded again, one by one: measured on the streaming job, more than half of the
Python's time went there, not into the audit. The stage in front of each stateful stage
therefore gathers what a bundle produced into one `Batch` per key, emitted when the bundle
ends (a source bundle is one Kafka read: up to `max_records_per_read` records), and the
stateful stage takes the batch's items in order. Prism runs a Flatten itself, so the
branches of a Flatten are gathered before it, and `Unbatch` after it gives the items back
as elements. Nothing else changes: the stages keep their per-record logic, so a batch is
only a container.

Timestamps: a batch is stamped with the earliest of its items', so it holds the
downstream watermark where its earliest item would have; each item keeps its own
timestamp in the batch, and `Unbatch` restores it.

Example: the events (shard "3", e1 at 10:00), (shard "3", e2 at 09:00) in one bundle
-> ("3", Batch([(e1, <10:00 in µs>), (e2, <09:00 in µs>)])) at 09:00.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

# What an item takes encoded, roughly: only for the runner's size metrics.
_TYPICAL_ITEM_BYTES = 300


@dataclass(frozen=True, slots=True)
class Batch:
    """What a bundle produced for one key, in the order it produced it: (value, its
    timestamp in microseconds) each."""

    items: list[tuple[Any, int]]


class BatchCoder(beam.coders.Coder):  # type: ignore[misc]
    """One pickle for the whole batch (a list's default coder pickles item by item)."""

    def encode(self, batch: Batch) -> bytes:
        return pickle.dumps(batch.items, protocol=5)

    def decode(self, encoded: bytes) -> Batch:
        return Batch(pickle.loads(encoded))

    def estimate_size(self, batch: Batch) -> int:
        return _TYPICAL_ITEM_BYTES * len(batch.items)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type[Batch]:
        return Batch


beam.coders.registry.register_coder(Batch, BatchCoder)


class GatherPerBundleFn(beam.DoFn):  # type: ignore[misc]
    """element -> nothing; when the bundle ends, (key, Batch) per key seen, stamped with
    the earliest timestamp of its items (global window: the streaming path's only one)."""

    def __init__(self, key: Callable[[Any], str]) -> None:
        self._key = key

    def start_bundle(self) -> None:
        self._items: dict[str, list[Any]] = {}
        self._earliest: dict[str, int] = {}

    def process(self, element: Any, stamp: Any = beam.DoFn.TimestampParam) -> None:
        key = self._key(element)
        micros = Timestamp.of(stamp).micros
        items = self._items.get(key)
        if items is None:
            self._items[key] = items = []
            self._earliest[key] = micros
        elif micros < self._earliest[key]:
            self._earliest[key] = micros
        items.append((element, micros))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        window = GlobalWindow()
        for key, items in self._items.items():
            earliest = Timestamp(micros=self._earliest[key])
            yield WindowedValue((key, Batch(items)), earliest, [window])
        self._items, self._earliest = {}, {}


class GatherPerBundle(beam.PTransform):  # type: ignore[misc]
    """Elements -> (key, Batch) once per key per bundle (see the module docstring)."""

    def __init__(self, key: Callable[[Any], str]) -> None:
        super().__init__()
        self._key = key

    def expand(self, elements: Any) -> Any:
        # A typed KV output: Prism needs a KV coder in front of a stateful stage.
        return elements | "Gather" >> beam.ParDo(GatherPerBundleFn(self._key)).with_output_types(
            tuple[str, Batch]
        )


def unbatch(element: tuple[str, Batch]) -> Iterator[TimestampedValue]:
    """(key, Batch) -> its items, each at its own timestamp (`beam.FlatMap(unbatch)`)."""
    for value, micros in element[1].items:
        yield TimestampedValue(value, Timestamp(micros=micros))

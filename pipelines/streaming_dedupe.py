"""Streaming dedupe: one copy of each event_id lands, every other delivery is counted.

The batch path groups all deliveries of an event_id and keeps the first by source position
(`transforms.DedupeEvents`). A stream cannot wait for all of them: the first delivery seen
is kept (in-process state, `pipelines.process_state`), later identical ones become
`duplicate_deliveries` rows and later conflicting ones are quarantined (EVENT_ID_CONFLICT),
as in the batch path. With keys hashed to partitions, repeated deliveries of one content
share a partition, so the first seen is also the first by offset.

After a restart the pipeline rebuilds its state from the events DuckDB already holds
("landed" deliveries, read before the Kafka source resumes). A landed copy always wins: a
delivery read from Kafka is a replay when it is the landed record itself (same source
position: dropped, it is already accounted for), and a repeat otherwise, even when it
reaches this stage before the landed copy does.

In: (Accepted, landed). Out: main = Accepted, every kept event including landed ones (the
lifecycle needs them all); `new_events` = kept events not yet landed; `duplicates` = rows;
`quarantine` = Quarantined.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, NamedTuple
from uuid import uuid4

import apache_beam as beam
from apache_beam import pvalue

from pipelines import process_state
from pipelines.intake import Accepted
from pipelines.streaming_lifecycle import shard_of
from pipelines.transforms import DUPLICATES, QUARANTINE, repeat_output, topic_of

NEW_EVENTS = "new_events"


class _Kept(NamedTuple):
    accepted: Accepted
    landed: bool


class Deliveries:
    """The kept delivery of every event_id seen (in-process state, see process_state)."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], _Kept] = {}
        self.lock = threading.Lock()

    def offer(self, delivery: Accepted, landed: bool) -> Iterator[Any]:
        """The outputs for one delivery (see the module docstring)."""
        key = (topic_of(delivery), delivery.event.event_id)
        kept = self.kept.get(key)
        if kept is None:
            self.kept[key] = _Kept(delivery, landed)
            yield delivery
            if not landed:
                yield pvalue.TaggedOutput(NEW_EVENTS, delivery)
            return
        if delivery.origin == kept.accepted.origin:
            if landed and not kept.landed:
                self.kept[key] = _Kept(kept.accepted, True)
            return  # the same record read again: already accounted for
        if landed and not kept.landed:
            # The landed copy reached us after a later delivery that we kept: the landed
            # one stays (its row is in DuckDB); the other becomes the repeat.
            self.kept[key] = _Kept(delivery, True)
            yield delivery
            yield repeat_output(kept.accepted, delivery)
            return
        yield repeat_output(delivery, kept.accepted)


class DedupeDeliveriesFn(beam.DoFn):  # type: ignore[misc]
    """(shard, (Accepted, landed)) -> the kept event, or a repeat's row."""

    def __init__(self, stage_id: str) -> None:
        self._stage_id = stage_id

    def setup(self) -> None:
        self._state = process_state.shared(self._stage_id, Deliveries)

    def process(self, element: tuple[str, tuple[Accepted, bool]]) -> Iterator[Any]:
        delivery, landed = element[1]
        with self._state.lock:
            out = list(self._state.offer(delivery, landed))
        yield from out


class DedupeDeliveries(beam.PTransform):  # type: ignore[misc]
    """(Accepted, landed) -> {main: kept events, new_events, duplicates, quarantine}.

    Keyed by shard of the content: every delivery of an event carries its content, so
    repeats meet in the same shard."""

    def __init__(self, shards: int = 1) -> None:
        super().__init__()
        self._shards = shards
        self.stage_id = f"dedupe-deliveries-{uuid4().hex}"

    def expand(self, deliveries: Any) -> Any:
        shards = self._shards
        return (
            deliveries
            # A typed keying step: Prism needs a KV coder in front of a stateful stage.
            | "KeyByShard"
            >> beam.Map(lambda d: (shard_of(d[0].event.content_key, shards), d)).with_output_types(
                tuple[str, Any]
            )
            | "KeepFirstSeen"
            >> beam.ParDo(DedupeDeliveriesFn(self.stage_id)).with_outputs(
                NEW_EVENTS, DUPLICATES, QUARANTINE, main="events"
            )
        )

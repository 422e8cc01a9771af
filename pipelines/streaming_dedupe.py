"""Streaming dedupe: one copy of each event_id lands, every other delivery is counted.

The batch path groups all deliveries of an event_id and keeps the first by source position
(`transforms.DedupeEvents`). A stream cannot wait for all of them, and the order copies
reach this stage is not their offset order: Prism queues a stage's input by timestamp,
ties broken by place within the bundle that produced them (not across bundles), and hands
it over in its queue's heap order, so a repeat (same event time as its original) can come
first, the more often the more bundles queue up (a loaded machine). So identical
copies are settled by position, not arrival: the lowest kept so far is kept (in-process
state, `pipelines.process_state`) and every other becomes a `duplicate_deliveries` row
naming it; a lower copy arriving after a higher one was kept takes its place (a new event
row, the higher one's row turned into a duplicate row: the landing stage and the sink keep
the lowest position too, `streaming_land`, `connectors.duckdb_deliveries`). The lifecycles
get the event once: the copies are the same event. Conflicting copies (other content
under the event_id) are quarantined (EVENT_ID_CONFLICT) against the copy kept when they
arrive.

After a restart the pipeline rebuilds its state from the events DuckDB already holds
("landed" deliveries, read before the Kafka source resumes). A delivery read from Kafka is
a replay when it is the landed record itself (same source position: dropped, it is
already accounted for); an identical copy at a lower position than the landed one (read
again because a run stopped before its rows landed) takes the landed one's place, as
above; a conflicting one is refused, even when it reaches this stage before the landed
copy does.

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
from pipelines.transforms import DUPLICATES, QUARANTINE, delivery_order, repeat_output, topic_of

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
        if delivery.event == kept.accepted.event:
            yield from self._repeat(key, kept, delivery, landed)
            return
        if landed and not kept.landed:
            # The landed copy reached us after a later delivery that we kept: the landed
            # one stays (its row is in DuckDB); the other becomes the repeat.
            self.kept[key] = _Kept(delivery, True)
            yield delivery
            yield repeat_output(kept.accepted, delivery)
            return
        yield repeat_output(delivery, kept.accepted)

    def _repeat(
        self, key: tuple[str, str], kept: _Kept, delivery: Accepted, landed: bool
    ) -> Iterator[Any]:
        """An identical copy: the lower source position is kept, whichever came first."""
        if delivery_order(delivery) > delivery_order(kept.accepted):
            yield repeat_output(delivery, kept.accepted)
            return
        self.kept[key] = _Kept(delivery, landed)
        if not landed:
            yield pvalue.TaggedOutput(NEW_EVENTS, delivery)
        yield repeat_output(kept.accepted, delivery)


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

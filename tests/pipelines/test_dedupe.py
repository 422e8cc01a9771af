"""Repeated deliveries of one event_id, batch (`DedupeFn`) and stream (`Deliveries`): an
identical one is a duplicates row, a conflicting one a quarantine record that keeps the
conflicting delivery's own key and value bytes, whichever delivery is kept."""

from __future__ import annotations

import dataclasses
from typing import Any

from apache_beam import pvalue

from connectors.errors import ReasonCode
from connectors.origin import SourceRef
from pipelines.intake import Accepted, Quarantined
from pipelines.streaming_dedupe import NEW_EVENTS, Deliveries
from pipelines.transforms import DUPLICATES, QUARANTINE, DedupeFn
from tests.conftest import request

ORIGINAL = request(3, content="c2")
CONFLICTING = dataclasses.replace(ORIGINAL, content_id="c9")


def delivery(event: Any, offset: int, key: bytes | None, value: bytes) -> Accepted:
    return Accepted(event, SourceRef("removal.requests/0", offset), 2, value, key)


def tagged(outputs: list[Any], tag: str) -> list[Any]:
    return [o.value for o in outputs if isinstance(o, pvalue.TaggedOutput) and o.tag == tag]


def test_batch_conflict_keeps_the_conflicting_deliverys_key() -> None:
    kept = delivery(ORIGINAL, 4, b"twitter/c2", b"original")
    repeat = delivery(ORIGINAL, 7, b"twitter/c2-again", b"original")
    conflict = delivery(CONFLICTING, 9, b"twitter/c9", b"conflicting")
    key = ("removal.requests", ORIGINAL.event_id)
    outputs = list(DedupeFn().process((key, [conflict, repeat, kept])))

    assert outputs[0] is kept
    assert [row["source_ref"] for row in tagged(outputs, DUPLICATES)] == [repeat.origin.ref]
    assert tagged(outputs, QUARANTINE) == [
        Quarantined(
            origin=conflict.origin,
            topic="removal.requests",
            reason=ReasonCode.EVENT_ID_CONFLICT,
            message=f"event_id {ORIGINAL.event_id} already delivered with other content "
            f"at {kept.origin.ref}",
            key=b"twitter/c9",
            value=b"conflicting",
            event_id=ORIGINAL.event_id,
        )
    ]


def test_stream_conflict_after_the_kept_delivery_keeps_its_key() -> None:
    state = Deliveries()
    first = delivery(ORIGINAL, 4, b"twitter/c2", b"original")
    later = delivery(CONFLICTING, 9, b"twitter/c9", b"conflicting")
    outputs = list(state.offer(first, landed=False))
    assert outputs[0] is first and tagged(outputs, NEW_EVENTS) == [first]

    (refused,) = tagged(list(state.offer(later, landed=False)), QUARANTINE)
    assert (refused.origin, refused.reason) == (later.origin, ReasonCode.EVENT_ID_CONFLICT)
    assert (refused.key, refused.value) == (b"twitter/c9", b"conflicting")


def test_stream_landed_copy_arriving_second_refuses_the_read_delivery_with_its_key() -> None:
    # After a restart the landed copy (rebuilt from DuckDB: no key, no bytes) may reach the
    # stage after a delivery read from Kafka; the landed one is kept, the read one refused.
    state = Deliveries()
    read = delivery(CONFLICTING, 9, b"twitter/c9", b"conflicting")
    landed = delivery(ORIGINAL, 4, None, b"")
    list(state.offer(read, landed=False))

    outputs = list(state.offer(landed, landed=True))
    assert outputs[0] is landed
    (refused,) = tagged(outputs, QUARANTINE)
    assert (refused.origin, refused.key, refused.value) == (
        read.origin,
        b"twitter/c9",
        b"conflicting",
    )

"""Composite transforms of the audit, each named for what it produces.

They take and give plain PCollections, so a test feeds them with `beam.Create` and the
pipeline assembly (`batch.py`) wires them between the connectors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from connectors.avro_files import RawMessage
from connectors.errors import ReasonCode
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines import rows
from pipelines.intake import (
    ACTIONS_TOPIC,
    REQUESTS_TOPIC,
    Accepted,
    IntakeRules,
    Quarantined,
    take_in,
)
from pipelines.lifecycle import content_lifecycle, status_segments
from pipelines.model import EPOCH, RequestEvent, RequestLifecycle, Status
from pipelines.policy import SlaPolicy

QUARANTINE = "quarantine"
DUPLICATES = "duplicates"
DAY = timedelta(days=1)


class TakeInFn(beam.DoFn):  # type: ignore[misc]
    """(SourceRef, RawMessage) -> Accepted; refused messages to the `quarantine` output.

    `schemas_dir`: the schema catalog (None: the packaged one). The DoFn carries the path
    and each worker loads the store once, in `setup`."""

    def __init__(self, rules: IntakeRules, schemas_dir: Path | None = None) -> None:
        self._rules = rules
        self._schemas_dir = schemas_dir

    def setup(self) -> None:
        self._store = SchemaStore.load(self._schemas_dir)

    def process(self, element: tuple[SourceRef, RawMessage]) -> Iterator[Any]:
        origin, message = element
        result = take_in(message, origin, self._store, self._rules)
        if isinstance(result, Quarantined):
            yield pvalue.TaggedOutput(QUARANTINE, result)
        else:
            yield result


class DecodeAndValidate(beam.PTransform):  # type: ignore[misc]
    """Raw messages -> {main: Accepted, quarantine: Quarantined}, decoded with the schema
    catalog in `schemas_dir` (None: the packaged one)."""

    def __init__(self, rules: IntakeRules, schemas_dir: Path | None = None) -> None:
        super().__init__()
        self._rules = rules
        self._schemas_dir = schemas_dir

    def expand(self, messages: Any) -> Any:
        return messages | "TakeIn" >> beam.ParDo(
            TakeInFn(self._rules, self._schemas_dir)
        ).with_outputs(QUARANTINE, main="accepted")


class DedupeFn(beam.DoFn):  # type: ignore[misc]
    """All deliveries of one event_id -> the first delivery (by source position), plus a
    `duplicates` row per identical repeat and a quarantine record per conflicting one."""

    def process(self, element: tuple[tuple[str, str], Iterable[Accepted]]) -> Iterator[Any]:
        _, deliveries = element
        ordered = sorted(deliveries, key=delivery_order)
        kept = ordered[0]
        yield kept
        for other in ordered[1:]:
            yield repeat_output(other, kept)


def delivery_order(accepted: Accepted) -> tuple[str, int]:
    """The order in which copies of an event_id are preferred, the first kept: by source
    position, in both paths (the stream meets the copies in no fixed order)."""
    return accepted.origin.source, accepted.origin.position


def topic_of(accepted: Accepted) -> str:
    return REQUESTS_TOPIC if isinstance(accepted.event, RequestEvent) else ACTIONS_TOPIC


def repeat_output(other: Accepted, kept: Accepted) -> Any:
    """Another delivery of `kept`'s event_id: a `duplicates` row when the event is the
    same, else a quarantine record (EVENT_ID_CONFLICT) keeping its key and value bytes.

    A copy rebuilt from DuckDB after a restart (no key, no bytes) is `other` only when
    identical (a duplicates row needs no bytes): a refused `other` is always a delivery
    read from a source, so its key and payload are the message's own."""
    topic, event_id = topic_of(kept), kept.event.event_id
    if other.event == kept.event:
        return pvalue.TaggedOutput(
            DUPLICATES,
            {
                "source_ref": other.origin.ref,
                "topic": topic,
                "event_id": event_id,
                "kept_source_ref": kept.origin.ref,
            },
        )
    return pvalue.TaggedOutput(
        QUARANTINE,
        Quarantined(
            origin=other.origin,
            topic=topic,
            reason=ReasonCode.EVENT_ID_CONFLICT,
            message=f"event_id {event_id} already delivered with other content "
            f"at {kept.origin.ref}",
            key=other.key,
            value=other.payload,
            event_id=event_id,
        ),
    )


class DedupeEvents(beam.PTransform):  # type: ignore[misc]
    """Accepted -> {main: one Accepted per event_id, duplicates: rows, quarantine: conflicts}."""

    def expand(self, accepted: Any) -> Any:
        return (
            accepted
            | "KeyByEventId" >> beam.Map(lambda a: ((topic_of(a), a.event.event_id), a))
            | "GroupDeliveries" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.ParDo(DedupeFn()).with_outputs(DUPLICATES, QUARANTINE, main="events")
        )


class _LifecycleFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, policy: SlaPolicy) -> None:
        self._policy = policy

    def process(
        self, element: tuple[tuple[str, str], dict[str, list[Any]]]
    ) -> Iterator[RequestLifecycle]:
        _, grouped = element
        yield from content_lifecycle(grouped["requests"], grouped["actions"], self._policy)


class MatchRequestsToActions(beam.PTransform):  # type: ignore[misc]
    """Unique events -> RequestLifecycle per request (grouped by platform + content)."""

    def __init__(self, policy: SlaPolicy) -> None:
        super().__init__()
        self._policy = policy

    def expand(self, events: Any) -> Any:
        keyed = events | "KeyByContent" >> beam.Map(lambda a: (a.event.content_key, a.event))
        requests = keyed | "Requests" >> beam.Filter(lambda kv: isinstance(kv[1], RequestEvent))
        actions = keyed | "Actions" >> beam.Filter(lambda kv: not isinstance(kv[1], RequestEvent))
        return (
            {"requests": requests, "actions": actions}
            | "GroupByContent" >> beam.CoGroupByKey()
            | "Lifecycle" >> beam.ParDo(_LifecycleFn(self._policy))
        )


def _day_at_or_after(t: datetime) -> int:
    """The first midnight (UTC) at or after t, as a day number since the epoch: the first
    daily snapshot that sees t. (Grouping keys must encode deterministically; dates don't.)"""
    midnight = datetime(t.year, t.month, t.day, tzinfo=UTC)
    return (midnight - EPOCH).days + (0 if midnight == t else 1)


_COUNTED = {Status.OPEN: 0, Status.OVERDUE: 1, Status.DECLINED: 2}
Deltas = tuple[int, int, int]


def backlog_deltas(lc: RequestLifecycle) -> Iterator[tuple[tuple[str, str, str, int], Deltas]]:
    """(category, platform, authority, day), (open, overdue, declined) changes of one
    request: +1 at the first midnight of each counted status, -1 at the first past it."""
    key = (lc.request.category.value, lc.request.platform, lc.request.authority)
    for segment in status_segments(lc):
        slot = _COUNTED.get(segment.status)
        if slot is None:
            continue
        start = _day_at_or_after(segment.start)
        end = _day_at_or_after(segment.end) if segment.end is not None else None
        if end == start:
            continue
        yield (*key, start), _one_hot(slot, 1)
        if end is not None:
            yield (*key, end), _one_hot(slot, -1)


def _one_hot(slot: int, value: int) -> Deltas:
    return (value if slot == 0 else 0, value if slot == 1 else 0, value if slot == 2 else 0)


def sum_deltas(values: Iterable[Deltas]) -> Deltas:
    """Element-wise sum of (open, overdue, declined) changes."""
    o = ov = d = 0
    for a, b, c in values:
        o, ov, d = o + a, ov + b, d + c
    return (o, ov, d)


def daily_rows(
    element: tuple[tuple[str, str, str], Iterable[tuple[int, Deltas]]],
) -> Iterator[rows.Row]:
    """One series' changes by day -> its backlog_daily rows, every day from the first
    change to the last."""
    (category, platform, authority), changes = element
    by_day: dict[int, Deltas] = defaultdict(lambda: (0, 0, 0))
    for day, deltas in changes:
        by_day[day] = sum_deltas([by_day[day], deltas])
    day, last = min(by_day), max(by_day)
    counts = (0, 0, 0)
    while day <= last:
        counts = sum_deltas([counts, by_day.get(day, (0, 0, 0))])
        yield {
            "as_of": EPOCH + day * DAY,
            "category": category,
            "platform": platform,
            "authority": authority,
            "open": counts[0],
            "overdue": counts[1],
            "declined": counts[2],
            "unresolved": sum(counts),
        }
        day += 1


class BacklogByCategory(beam.PTransform):  # type: ignore[misc]
    """RequestLifecycle -> daily backlog rows: unresolved requests (open, overdue, declined)
    per category, platform and authority as of each midnight UTC, from the first to the
    last day the backlog of that key changes (it holds steady after)."""

    def expand(self, lifecycles: Any) -> Any:
        return (
            lifecycles
            | "Deltas" >> beam.FlatMap(backlog_deltas)
            | "SumPerDay" >> beam.CombinePerKey(sum_deltas)
            | "KeyBySeries" >> beam.Map(lambda kv: (kv[0][:3], (kv[0][3], kv[1])))
            | "GroupSeries" >> beam.GroupByKey()
            | "Accumulate" >> beam.FlatMap(daily_rows)
        )


class SlaBreaches(beam.PTransform):  # type: ignore[misc]
    """RequestLifecycle -> one row per request that missed its deadline."""

    def expand(self, lifecycles: Any) -> Any:
        return lifecycles | "BreachRows" >> beam.FlatMap(
            lambda lc: [row] if (row := rows.breach_row(lc)) is not None else []
        )

"""The audit's transforms for the batch path, one Beam element per many records.

The per-record transforms in `transforms.py` are right for streaming, but on Beam's local
runner each element costs far more than the work it carries. Here an element is a chunk
of messages or a bucket of events, and each step loops in plain Python over the same pure
functions the per-record path calls (`take_in`, `repeat_output`, `content_lifecycle`,
`rows.*`), so both paths land the same rows:

    MessageChunk -> TakeInChunks -> (event_id bucket, deliveries file) -> GroupByKey
      -> DedupeBuckets -> (content bucket, unique events file) -> GroupByKey
      -> MatchBuckets -> backlog deltas per bucket -> BacklogDailyRows (one combine)

Every step also emits the rows it finished as `StagedRows(table, part, rows)` on its
`rows` output, for `connectors.parquet_stage.WriteStagedRows`. The events themselves
cross the shuffles as files (`connectors.parquet_stage.SpillWriter`, in the stage
directory), one per bucket and bundle, and only their paths as elements: Beam's local
runner would otherwise hold every delivery and every event in memory, decoded, between
steps. In those files an event is a plain tuple (`pack_event`): pickling frozen
dataclasses one by one costs more than the steps themselves.
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import fields
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from connectors.beam_files import MessageChunk
from connectors.origin import SourceRef
from connectors.parquet_stage import SpillWriter, read_spilled
from connectors.schema_store import SchemaStore
from pipelines import rows
from pipelines.intake import Accepted, IntakeRules, Quarantined, take_in
from pipelines.lifecycle import content_lifecycle
from pipelines.model import ActionEvent, RequestEvent
from pipelines.policy import SlaPolicy
from pipelines.transforms import (
    DUPLICATES,
    Deltas,
    backlog_deltas,
    daily_rows,
    repeat_output,
    sum_deltas,
)

ROWS = "rows"
# Stage subdirectories the shuffles spill to.
DELIVERIES = "deliveries"
EVENTS = "events"

_KINDS: tuple[type[RequestEvent], type[ActionEvent]] = (RequestEvent, ActionEvent)


def _positional_fields(cls: type[Any]) -> list[str]:
    """The fields `cls(*values)` takes, in order; an event packs as their values."""
    names = [f.name for f in fields(cls)]
    if any(not f.init or f.kw_only is True for f in fields(cls)) or names[0] != "event_id":
        raise TypeError(f"{cls.__name__} no longer packs as (event_id, ...) positionally")
    return names


_NAMES = tuple(_positional_fields(cls) for cls in _KINDS)
_FIELDS = tuple(attrgetter(*names) for names in _NAMES)
_EVENT_ID = 0
_PLATFORM = tuple(names.index("platform") for names in _NAMES)
_CONTENT_ID = tuple(names.index("content_id") for names in _NAMES)

# An event as its kind (0 request, 1 action) and its fields in declaration order.
PackedEvent = tuple[int, tuple[Any, ...]]
# An Accepted: (kind, event fields, source, position, schema_version, payload, key).
Delivery = tuple[int, tuple[Any, ...], str, int, int, bytes, bytes | None]
_ARRIVAL = itemgetter(2, 3)  # a delivery's (source, position)
BacklogKey = tuple[str, str, str, int]
# What a row takes encoded, roughly: only for the runner's size metrics.
_TYPICAL_ITEM_BYTES = 200


class StagedRows(NamedTuple):
    """Finished rows of one table from one chunk or bucket; `part` is unique per table in
    a run. Example: StagedRows("quarantine", "intake-00000-000004096", [{...}])"""

    table: str
    part: str
    rows: list[rows.Row]


class StagedRowsCoder(beam.coders.Coder):  # type: ignore[misc]
    """Staged rows are written where they are made (the write is fused with the step), so
    this coder only spares the runner's size sampling from encoding them."""

    def encode(self, staged: StagedRows) -> bytes:
        return pickle.dumps(tuple(staged), protocol=5)

    def decode(self, encoded: bytes) -> StagedRows:
        return StagedRows(*pickle.loads(encoded))

    def estimate_size(self, staged: StagedRows) -> int:
        return _TYPICAL_ITEM_BYTES * len(staged.rows)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type[StagedRows]:
        return StagedRows


beam.coders.registry.register_coder(StagedRows, StagedRowsCoder)


def pack_event(event: RequestEvent | ActionEvent) -> PackedEvent:
    kind = 0 if isinstance(event, RequestEvent) else 1
    return kind, _FIELDS[kind](event)


def unpack_event(packed: PackedEvent) -> RequestEvent | ActionEvent:
    kind, values = packed
    return _KINDS[kind](*values)


def pack_accepted(a: Accepted) -> Delivery:
    kind, values = pack_event(a.event)
    return kind, values, a.origin.source, a.origin.position, a.schema_version, a.payload, a.key


def unpack_accepted(d: Delivery) -> Accepted:
    kind, values, source, position, version, payload, key = d
    return Accepted(
        unpack_event((kind, values)), SourceRef(source, position), version, payload, key
    )


def _bucket(text: str, buckets: int) -> int:
    # crc32, not hash(): every worker process must put a key in the same bucket.
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % buckets


def _content_bucket(packed: PackedEvent, buckets: int) -> int:
    kind, values = packed
    return _bucket(f"{values[_PLATFORM[kind]]}\x00{values[_CONTENT_ID[kind]]}", buckets)


class _SpillingFn(beam.DoFn):  # type: ignore[misc]
    """A step whose main output is spilled to `folder`: each bundle writes one file per
    bucket and emits (bucket, path) once, when it finishes."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def start_bundle(self) -> None:
        self._spill = SpillWriter(self._folder, uuid.uuid4().hex)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for bucket_path in self._spill.close():
            yield GlobalWindows.windowed_value(bucket_path)

    def spill(self, keyed: Iterable[tuple[int, Any]]) -> None:
        """Append (bucket, item) pairs to their buckets' files, one frame per bucket."""
        buckets: dict[int, list[Any]] = defaultdict(list)
        for bucket, item in keyed:
            buckets[bucket].append(item)
        for bucket, items in buckets.items():
            self._spill.write(bucket, items)


def _staged(table: str, part: str, table_rows: list[rows.Row]) -> Iterator[Any]:
    if table_rows:
        yield pvalue.TaggedOutput(ROWS, StagedRows(table, part, table_rows))


class TakeInChunkFn(_SpillingFn):
    """MessageChunk -> deliveries spilled by event_id bucket, emitted as (bucket, file)
    per bundle; refused messages staged as quarantine rows. The schema store is loaded
    once per worker, in `setup`."""

    def __init__(
        self, rules: IntakeRules, schemas_dir: Path | None, buckets: int, folder: Path
    ) -> None:
        super().__init__(folder)
        self._rules = rules
        self._schemas_dir = schemas_dir
        self._buckets = buckets

    def setup(self) -> None:
        self._store = SchemaStore.load(self._schemas_dir)

    def process(self, chunk: MessageChunk) -> Iterator[Any]:
        accepted: list[tuple[int, Delivery]] = []
        refused: list[rows.Row] = []
        for origin, message in chunk:
            result = take_in(message, origin, self._store, self._rules)
            if isinstance(result, Quarantined):
                refused.append(rows.quarantine_row(result))
            else:
                delivery = pack_accepted(result)
                accepted.append((_bucket(delivery[1][_EVENT_ID], self._buckets), delivery))
        self.spill(accepted)
        yield from _staged("quarantine", f"intake-{chunk.part}", refused)


class TakeInChunks(beam.PTransform):  # type: ignore[misc]
    """MessageChunk -> {main: (bucket, file of Delivery frames), rows: StagedRows
    (quarantine)}; the files go to `<stage>/deliveries/`."""

    def __init__(
        self, rules: IntakeRules, schemas_dir: Path | None, buckets: int, stage: Path
    ) -> None:
        super().__init__()
        self._fn = TakeInChunkFn(rules, schemas_dir, buckets, stage / DELIVERIES)

    def expand(self, chunks: Any) -> Any:
        return chunks | "TakeIn" >> beam.ParDo(self._fn).with_output_types(
            tuple[int, str], rows=StagedRows
        ).with_outputs(ROWS, main="deliveries")


class DedupeBucketFn(_SpillingFn):
    """(bucket, [file of Delivery frames]) -> the unique events spilled by content bucket,
    emitted as (content bucket, file) per bundle; their event rows, duplicate rows and
    conflicts staged.

    Per (topic, event_id), exactly `transforms.DedupeFn`: the first delivery by (source,
    position) is kept; each other one is a duplicate row when its event is equal, else an
    EVENT_ID_CONFLICT quarantine row."""

    def __init__(self, buckets: int, folder: Path) -> None:
        super().__init__(folder)
        self._buckets = buckets

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        bucket, files = element
        by_event_id: dict[tuple[int, str], list[Delivery]] = defaultdict(list)
        for frame in read_spilled(files):
            for delivery in frame:
                by_event_id[delivery[0], delivery[1][_EVENT_ID]].append(delivery)
        events: tuple[list[rows.Row], list[rows.Row]] = ([], [])
        duplicates: list[rows.Row] = []
        conflicts: list[rows.Row] = []
        unique: list[tuple[int, PackedEvent]] = []
        for deliveries in by_event_id.values():
            if len(deliveries) > 1:
                deliveries.sort(key=_ARRIVAL)
            kept = unpack_accepted(deliveries[0])
            for other in deliveries[1:]:
                out = repeat_output(unpack_accepted(other), kept)
                if out.tag == DUPLICATES:
                    duplicates.append(out.value)
                else:
                    conflicts.append(rows.quarantine_row(out.value))
            kind = deliveries[0][0]
            events[kind].append(rows.event_row(kept))
            packed = (kind, deliveries[0][1])
            unique.append((_content_bucket(packed, self._buckets), packed))
        self.spill(unique)
        part = f"dedupe-{bucket:05d}"
        yield from _staged("request_events", part, events[0])
        yield from _staged("action_events", part, events[1])
        yield from _staged("duplicate_deliveries", part, duplicates)
        yield from _staged("quarantine", part, conflicts)


class DedupeBuckets(beam.PTransform):  # type: ignore[misc]
    """(bucket, file of Delivery frames) -> {main: (content bucket, file of PackedEvent
    frames), rows: StagedRows (request_events, action_events, duplicate_deliveries,
    quarantine)}; the files go to `<stage>/events/`."""

    def __init__(self, buckets: int, stage: Path) -> None:
        super().__init__()
        self._buckets = buckets
        self._folder = stage / EVENTS

    def expand(self, deliveries: Any) -> Any:
        return (
            deliveries
            | "GroupDeliveries" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.ParDo(DedupeBucketFn(self._buckets, self._folder))
            .with_output_types(tuple[int, str], rows=StagedRows)
            .with_outputs(ROWS, main="events")
        )


class MatchBucketFn(beam.DoFn):  # type: ignore[misc]
    """(content bucket, [file of PackedEvent frames]) -> the bucket's backlog deltas summed per
    (category, platform, authority, day); request, transition and breach rows staged.
    `content_lifecycle` runs once per (platform, content_id), as in
    `transforms.MatchRequestsToActions`."""

    def __init__(self, policy: SlaPolicy) -> None:
        self._policy = policy

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        bucket, files = element
        by_content: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
        for frame in read_spilled(files):
            for kind, values in frame:
                key = (values[_PLATFORM[kind]], values[_CONTENT_ID[kind]])
                by_content.setdefault(key, ([], []))[kind].append(unpack_event((kind, values)))
        requests: list[rows.Row] = []
        transitions: list[rows.Row] = []
        breaches: list[rows.Row] = []
        deltas: dict[BacklogKey, Deltas] = {}
        for key in sorted(by_content):
            request_events, action_events = by_content[key]
            for lc in content_lifecycle(request_events, action_events, self._policy):
                requests.append(rows.request_row(lc))
                transitions.extend(rows.transition_rows(lc))
                if (breach := rows.breach_row(lc)) is not None:
                    breaches.append(breach)
                for day_key, (o, ov, d) in backlog_deltas(lc):
                    before = deltas.get(day_key, (0, 0, 0))
                    deltas[day_key] = (before[0] + o, before[1] + ov, before[2] + d)
        yield deltas
        part = f"lifecycle-{bucket:05d}"
        yield from _staged("requests", part, requests)
        yield from _staged("lifecycle_transitions", part, transitions)
        yield from _staged("sla_breaches", part, breaches)


class MatchBuckets(beam.PTransform):  # type: ignore[misc]
    """(content bucket, file of PackedEvent frames) -> {main: backlog deltas per bucket, rows:
    StagedRows (requests, lifecycle_transitions, sla_breaches)}."""

    def __init__(self, policy: SlaPolicy) -> None:
        super().__init__()
        self._policy = policy

    def expand(self, events: Any) -> Any:
        return (
            events
            | "GroupByContent" >> beam.GroupByKey()
            | "Lifecycle"
            >> beam.ParDo(MatchBucketFn(self._policy))
            .with_output_types(dict[BacklogKey, Deltas], rows=StagedRows)
            .with_outputs(ROWS, main="deltas")
        )


class _MergeDeltasFn(beam.CombineFn):  # type: ignore[misc]
    """Backlog deltas per (category, platform, authority, day), summed over buckets. A day
    whose changes cancel out stays (at zero): it still extends its series' range of days,
    as in `transforms.BacklogByCategory`."""

    def create_accumulator(self) -> dict[BacklogKey, Deltas]:
        return {}

    def add_input(
        self, acc: dict[BacklogKey, Deltas], deltas: dict[BacklogKey, Deltas]
    ) -> dict[BacklogKey, Deltas]:
        for key, change in deltas.items():
            acc[key] = sum_deltas([acc.get(key, (0, 0, 0)), change])
        return acc

    def merge_accumulators(
        self, accumulators: Iterable[dict[BacklogKey, Deltas]]
    ) -> dict[BacklogKey, Deltas]:
        merged: dict[BacklogKey, Deltas] = {}
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc: dict[BacklogKey, Deltas]) -> dict[BacklogKey, Deltas]:
        return acc


def _backlog_rows(deltas: dict[BacklogKey, Deltas]) -> Iterator[StagedRows]:
    series: dict[tuple[str, str, str], list[tuple[int, Deltas]]] = defaultdict(list)
    for (category, platform, authority, day), change in deltas.items():
        series[category, platform, authority].append((day, change))
    backlog = [row for key in sorted(series) for row in daily_rows((key, series[key]))]
    if backlog:
        yield StagedRows("backlog_daily", "all", backlog)


class BacklogDailyRows(beam.PTransform):  # type: ignore[misc]
    """Backlog deltas per bucket -> StagedRows of backlog_daily: the daily rows of
    `transforms.BacklogByCategory`, from the deltas of every bucket summed."""

    def expand(self, deltas: Any) -> Any:
        return (
            deltas
            | "SumPerDay" >> beam.CombineGlobally(_MergeDeltasFn())
            | "Accumulate" >> beam.FlatMap(_backlog_rows).with_output_types(StagedRows)
        )

"""The streaming path's landing stage: rows -> DuckDB micro-batches, one writer.

Everything the pipeline lands arrives here as `(kind, payload)`: new event rows,
duplicate-delivery rows and quarantine rows (each traced to its source offset), and
released request histories. All go to one key, so one bundle at a time lands; a bundle's
rows are buffered and handed to the process's writer when the bundle finishes (or the
buffer fills), which lands them in micro-batches (`connectors.duckdb_stream_writer`), each
with the source offsets it covers, in one transaction with its ledger row.

Progress: an event-time timer ticks at every midnight UTC. It fires only once the
watermark has passed the midnight, when every row stamped at or before it has been
processed here, so the batch that lands with a tick records that everything up to that
midnight is landed (`stream_runs.watermark`), and backlog_daily is materialised up to it
(`connectors.duckdb_stream_writer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from connectors.duckdb_stream_sink import RELEASES_SCHEMA, LandingBatch
from connectors.duckdb_stream_writer import SharedWriter, WriterConfig
from connectors.origin import SourceRef
from connectors.stream_offsets import offset_runs, partition_of
from pipelines import process_state, rows
from pipelines.model import EPOCH
from pipelines.streaming_lifecycle import ReleasedLifecycle, from_timestamp, to_timestamp

EVENT, DUPLICATE, QUARANTINE, RELEASE = "event", "duplicate", "quarantine", "release"
DAY = timedelta(days=1)
_KEYS = {
    "request_events": "event_id",
    "action_events": "event_id",
    "quarantine": "quarantine_id",
    "duplicate_deliveries": "source_ref",
}
_EVENT_TABLES = ("request_events", "action_events")


def _order(row: rows.Row) -> tuple[str, int]:
    """An event row's place among its copies (`transforms.delivery_order`)."""
    origin = SourceRef.parse(str(row["source_ref"]))
    return origin.source, origin.position


def next_midnight(t: datetime) -> datetime:
    """The first midnight UTC strictly after t."""
    return EPOCH + ((t - EPOCH) // DAY + 1) * DAY


class _Buffer:
    """Rows of one micro-batch, one per key: of two event rows for an event_id the lower
    source position (the dedupe stage may send a higher copy first, then the lower one that
    replaces it, see streaming_dedupe), of other rows the first; of a request's histories
    the newest release."""

    def __init__(self, run: int) -> None:
        self.run = run
        self.rows: dict[str, dict[str, rows.Row]] = {table: {} for table in _KEYS}
        self.releases: dict[str, ReleasedLifecycle] = {}
        self.watermark: datetime | None = None

    def __len__(self) -> int:
        return sum(map(len, self.rows.values())) + len(self.releases)

    def add(self, kind: str, payload: Any) -> None:
        if kind == RELEASE:
            rid = payload.lifecycle.request.request_id
            held = self.releases.get(rid)
            if held is None or (payload.watermark, payload.revision) >= (
                held.watermark,
                held.revision,
            ):
                self.releases[rid] = payload
            return
        table = {EVENT: None, DUPLICATE: "duplicate_deliveries", QUARANTINE: "quarantine"}[kind]
        if table is None:
            table = "request_events" if "issued_at" in payload else "action_events"
        self._keep(table, payload)

    def _keep(self, table: str, row: rows.Row) -> None:
        found = self.rows[table]
        key = row[_KEYS[table]]
        held = found.get(key)
        if held is None or (table in _EVENT_TABLES and _order(row) < _order(held)):
            found[key] = row

    def merge(self, later: _Buffer) -> None:
        """Absorb a later buffer, keeping rows as `add` does."""
        for table, found in later.rows.items():
            for row in found.values():
                self._keep(table, row)
        for released in later.releases.values():
            self.add(RELEASE, released)
        if later.watermark is not None:
            self.watermark = max(self.watermark or later.watermark, later.watermark)

    def batch(self) -> LandingBatch:
        positions = []
        for table in _KEYS:
            for row in self.rows[table].values():
                origin = SourceRef.parse(str(row["source_ref"]))
                positions.append((*partition_of(origin.source), origin.position))
        tables = {
            table: pa.Table.from_pylist(list(found.values()), schema=rows.SCHEMAS[table])
            for table, found in self.rows.items()
            if found
        }
        releases = None
        if self.releases:
            histories = [r.lifecycle for r in self.releases.values()]
            tables["requests"] = _table("requests", [rows.request_row(lc) for lc in histories])
            tables["lifecycle_transitions"] = _table(
                "lifecycle_transitions", [t for lc in histories for t in rows.transition_rows(lc)]
            )
            tables["sla_breaches"] = _table(
                "sla_breaches", [b for lc in histories if (b := rows.breach_row(lc)) is not None]
            )
            releases = pa.Table.from_pylist(
                [
                    {
                        "request_id": rid,
                        "watermark": r.watermark,
                        "run": self.run,
                        "revision": r.revision,
                    }
                    for rid, r in self.releases.items()
                ],
                schema=RELEASES_SCHEMA,
            )
        return LandingBatch.covering(offset_runs(positions), tables, releases, self.watermark)


def _table(name: str, found: list[rows.Row]) -> pa.Table:
    return pa.Table.from_pylist(found, schema=rows.SCHEMAS[name])


@dataclass
class _Ticks:
    """The landing stage's tick bookkeeping (in-process state, see process_state)."""

    next: datetime | None = None
    ticked: bool = False


class LandFn(beam.DoFn):  # type: ignore[misc]
    """("land", (kind, payload)) -> nothing; lands micro-batches through the shared writer."""

    TICK = TimerSpec("tick", TimeDomain.WATERMARK)

    def __init__(self, config: WriterConfig, stage_id: str, max_buffered: int = 20_000) -> None:
        self._config = config
        self._stage_id = stage_id
        self._max_buffered = max_buffered

    def setup(self) -> None:
        self._writer = SharedWriter.acquire(self._config)
        self._ticks = process_state.shared(self._stage_id, _Ticks)

    def teardown(self) -> None:
        SharedWriter.release(self._config)

    def start_bundle(self) -> None:
        self._buffer = _Buffer(self._config.run or 0)

    def process(
        self,
        element: tuple[str, tuple[str, Any]],
        stamp: Any = beam.DoFn.TimestampParam,
        tick: Any = beam.DoFn.TimerParam(TICK),
    ) -> None:
        kind, payload = element[1]
        self._buffer.add(kind, payload)
        if kind == EVENT and not self._ticks.ticked:
            # Ticks start at the first midnight after the earliest event seen before the
            # first tick (events carry their event time; other rows the watermark of when
            # they were read, see connectors.kafka_watermark.element_stamp). Once ticking,
            # a tick is never moved back: it could land behind the watermark.
            at = next_midnight(from_timestamp(Timestamp.of(stamp)))
            if self._ticks.next is None or at < self._ticks.next:
                tick.set(to_timestamp(at))
                self._ticks.next = at
        if len(self._buffer) >= self._max_buffered:
            self._flush()

    @on_timer(TICK)  # type: ignore[untyped-decorator]
    def on_tick(
        self,
        fired: Any = beam.DoFn.TimestampParam,
        tick: Any = beam.DoFn.TimerParam(TICK),
    ) -> None:
        at = from_timestamp(fired)
        self._buffer.watermark = max(self._buffer.watermark or at, at)
        self._ticks.ticked = True
        following = at + DAY
        # Ticks follow the wall clock at most: past it only the end of a bounded read
        # moves the watermark, and ticking on to the end of time would never finish.
        if following <= datetime.now(UTC) + DAY:
            tick.set(to_timestamp(following))
            self._ticks.next = following
        else:
            self._ticks.next = None

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        buffer = self._buffer
        if len(buffer) or buffer.watermark is not None:
            self._writer.submit(buffer)
        self._buffer = _Buffer(buffer.run)


class Land(beam.PTransform):  # type: ignore[misc]
    """(kind, payload) elements -> landed in DuckDB (see module docstring)."""

    def __init__(self, config: WriterConfig) -> None:
        super().__init__()
        self._config = config
        self.stage_id = f"land-{uuid4().hex}"

    def expand(self, items: Any) -> Any:
        return (
            items
            | "OneWriter"
            >> beam.Map(lambda item: ("land", item)).with_output_types(tuple[str, Any])
            | "LandBatches" >> beam.ParDo(LandFn(self._config, self.stage_id))
        )

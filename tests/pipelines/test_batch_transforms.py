"""The batch path's chunked transforms (`pipelines.batch_transforms`, wired by
`batch.build`) against the per-record transforms (`pipelines.transforms`): on the same
files, with chunks and buckets small enough that every step sees several, both stage
the same rows in every table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from connectors.avro_files import RawMessage
from connectors.beam_files import ReadRawMessages
from connectors.origin import SourceRef
from connectors.parquet_stage import SpillWriter, read_spilled, write_staged
from connectors.schema_store import SchemaStore
from pipelines import rows
from pipelines.batch import batch_runner, build
from pipelines.batch_transforms import pack_accepted, unpack_accepted
from pipelines.intake import Accepted, IntakeRules
from pipelines.model import ActionType, Category, RequestEventType
from pipelines.policy import SlaPolicy
from pipelines.transforms import (
    DUPLICATES,
    QUARANTINE,
    BacklogByCategory,
    DecodeAndValidate,
    DedupeEvents,
    MatchRequestsToActions,
    SlaBreaches,
)
from tests.conftest import T0, WriteFiles, action, message, request

pytestmark = pytest.mark.slow

POLICY = SlaPolicy.load()
RULES = IntakeRules(
    now=datetime(2026, 1, 1, tzinfo=UTC),
    max_clock_skew_seconds=300,
    oldest_plausible=datetime(2000, 1, 1, tzinfo=UTC),
    max_message_bytes=1 << 20,
)


def _messages(store: SchemaStore) -> tuple[list[RawMessage], list[RawMessage]]:
    """Requests and actions over eight pieces of content: repeats, a conflict, a
    withdrawal, refusals, restrictions and malformed messages."""
    requests, actions = [], []
    for n in range(1, 25):
        content = f"c{n % 8}"
        category = (Category.SUICIDE_PROMOTION, Category.DRUGS, Category.TERRORISM)[n % 3]
        r = request(n, content=content, hours=n, category=category)
        requests.append(message(store, r))
        if n % 5 == 0:
            requests.append(message(store, r))  # an identical repeat
        if n % 7 == 0:  # a withdrawal of an earlier request
            withdrawn = dataclasses.replace(
                r,
                event_id=f"wd-{n}",
                event_type=RequestEventType.WITHDRAWN,
                withdrawn_at=T0 + timedelta(hours=n + 3),
            )
            requests.append(message(store, withdrawn))
    requests.append(message(store, dataclasses.replace(request(3), content_id="c99")))
    requests.append(RawMessage("removal.requests", None, requests[0].value[:-2], None))
    kinds = (ActionType.REMOVED, ActionType.RESTRICTED, ActionType.DECLINED)
    for n in range(1, 13):
        kind = kinds[n % 3]
        a = action(
            n,
            content=f"c{n % 8}",
            hours=2 * n + 20,
            kind=kind,
            jurisdiction="RU" if kind is ActionType.RESTRICTED else None,
        )
        actions.append(message(store, a))
        if n % 4 == 0:
            actions.append(message(store, a))
    return requests, actions


class _StageFn(beam.DoFn):  # type: ignore[misc]
    """All of one table's rows as one part, as the per-record pipeline produced them."""

    def __init__(self, stage: Path, table: str) -> None:
        self._stage = stage
        self._table = table

    def process(self, table_rows: list[rows.Row]) -> None:
        write_staged(self._stage, rows.SCHEMAS[self._table], self._table, "all", table_rows)


def _per_record(pipeline: beam.Pipeline, inputs: list[Path], stage: Path) -> None:
    """The batch pipeline as it was before chunking: one element per record."""
    intake = pipeline | ReadRawMessages(inputs) | DecodeAndValidate(RULES)
    unique = intake.accepted | DedupeEvents()
    lifecycles = unique.events | MatchRequestsToActions(POLICY)
    events = unique.events | "EventRows" >> beam.Map(rows.event_row)
    quarantined = (intake[QUARANTINE], unique[QUARANTINE]) | beam.Flatten()
    outputs = {
        "request_events": events | "Requests" >> beam.Filter(lambda r: "issued_at" in r),
        "action_events": events | "Actions" >> beam.Filter(lambda r: "acted_at" in r),
        "quarantine": quarantined | beam.Map(rows.quarantine_row),
        "duplicate_deliveries": unique[DUPLICATES],
        "requests": lifecycles | beam.Map(rows.request_row),
        "lifecycle_transitions": lifecycles | beam.FlatMap(rows.transition_rows),
        "sla_breaches": lifecycles | SlaBreaches(),
        "backlog_daily": lifecycles | BacklogByCategory(),
    }
    for table, pcoll in outputs.items():
        _ = (
            pcoll
            | f"All_{table}" >> beam.combiners.ToList()
            | f"Stage_{table}" >> beam.ParDo(_StageFn(stage, table))
        )


def _staged(stage: Path) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in rows.SCHEMAS:
        found = sorted(stage.glob(f"{table}-*.parquet"))
        table_rows = [r for path in found for r in pq.read_table(path).to_pylist()]
        out[table] = sorted((tuple(r.items()) for r in table_rows), key=repr)
    return out


def test_chunked_path_stages_the_rows_of_the_per_record_path(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    inputs = write_files(tmp_path / "in", *_messages(store))
    expected_stage, stage = tmp_path / "expected", tmp_path / "stage"
    expected_stage.mkdir()
    stage.mkdir()
    with beam.Pipeline(runner=batch_runner()) as pipeline:
        _per_record(pipeline, inputs, expected_stage)
    with beam.Pipeline(runner=batch_runner()) as pipeline:
        build(pipeline, inputs, stage, POLICY, RULES, chunk_size=5, buckets=3)

    expected, staged = _staged(expected_stage), _staged(stage)
    assert {t: len(r) for t, r in staged.items()} == {t: len(r) for t, r in expected.items()}
    assert staged == expected
    # The case exercises every table: repeats, a conflict, a refusal, breaches, backlog.
    assert all(expected[t] for t in rows.SCHEMAS), {t: len(r) for t, r in expected.items()}
    assert len(list(stage.glob("quarantine-*.parquet"))) > 1


def test_deliveries_cross_a_shuffle_unchanged(tmp_path: Path) -> None:
    withdrawn = dataclasses.replace(
        request(1), event_type=RequestEventType.WITHDRAWN, withdrawn_at=T0 + timedelta(hours=1)
    )
    deliveries = [
        Accepted(request(1), SourceRef("requests.avro", 3), 2, b"\xc3\x01", b"twitter/c1"),
        Accepted(withdrawn, SourceRef("requests.avro", 4), 3, b"\xc3\x01", b"twitter/c1"),
        Accepted(action(1, jurisdiction="RU"), SourceRef("removal.actions/0", 9), 1, b"", None),
    ]
    spill = SpillWriter(tmp_path / "deliveries", "bundle")
    spill.write(2, [pack_accepted(a) for a in deliveries[:2]])
    spill.write(0, [])
    spill.write(2, [pack_accepted(deliveries[2])])
    files = spill.close()
    assert [bucket for bucket, _ in files] == [0, 2]
    assert not list((tmp_path / "deliveries").glob(".*"))  # no partial file left behind
    frames = list(read_spilled([files[1][1]]))
    assert [unpack_accepted(d) for frame in frames for d in frame] == deliveries

"""Which copy of a repeated event lands must not depend on the order the copies reach the
streaming job's stages: as in the batch path (`transforms.DedupeFn`), the lowest source
position is the event row and every other copy a duplicate row naming it.

Prism hands a stage its pending elements in an order of its own (by timestamp, then by
position within the bundle that produced them, so two bundles' elements interleave), and
a repeat carries its original's event time: a repeat can reach the dedupe stage, and its
row the landing stage, before the original does. Here the copies go through the dedupe
state (`Deliveries`), the landing buffer and the DuckDB sink in every order, in one
micro-batch or one each, as the pipeline wires them (`streaming.build`); the database
must come out the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_beam import pvalue

from connectors.duckdb_stream_sink import StreamSink
from connectors.origin import SourceRef
from pipelines import rows
from pipelines.intake import Accepted
from pipelines.streaming_dedupe import NEW_EVENTS, Deliveries
from pipelines.streaming_land import DUPLICATE, EVENT, QUARANTINE, _Buffer
from pipelines.transforms import DUPLICATES
from pipelines.transforms import QUARANTINE as QUARANTINE_TAG
from tests.conftest import request

PARTITION = "removal.requests/0"
EVENT_93 = request(93, content="pm33")
OFFSETS = (38, 45, 52)  # the original and two identical repeats on its partition


def copy_at(offset: int) -> Accepted:
    return Accepted(EVENT_93, SourceRef(PARTITION, offset), 3, b"same bytes", b"twitter/pm33")


def landing_items(outputs: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """The dedupe stage's outputs as the landing stage receives them (`streaming.build`);
    the main output goes to the lifecycles, not here."""
    kinds = {NEW_EVENTS: EVENT, DUPLICATES: DUPLICATE, QUARANTINE_TAG: QUARANTINE}
    for out in outputs:
        if not isinstance(out, pvalue.TaggedOutput):
            continue
        kind = kinds[out.tag]
        if kind == EVENT:
            yield kind, rows.event_row(out.value)
        elif kind == QUARANTINE:
            yield kind, rows.quarantine_row(out.value)
        else:
            yield kind, out.value


def land(sink: StreamSink, items: list[tuple[str, Any]], per_item: bool) -> None:
    groups = [[item] for item in items] if per_item else [items]
    for group in groups:
        buffer = _Buffer(run=1)
        for kind, payload in group:
            buffer.add(kind, payload)
        sink.write_batch(buffer.batch())


def deliveries(sink: StreamSink) -> list[tuple[str, str | None]]:
    found = sink.connection.execute(
        "SELECT source_ref, NULL FROM request_events UNION ALL "
        "SELECT source_ref, kept_source_ref FROM duplicate_deliveries "
        "UNION ALL SELECT source_ref, 'quarantined' FROM quarantine ORDER BY 1"
    ).fetchall()
    return [(str(ref), None if kept is None else str(kept)) for ref, kept in found]


KEPT = f"{PARTITION}#38"
EXPECTED = [(KEPT, None), (f"{PARTITION}#45", KEPT), (f"{PARTITION}#52", KEPT)]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[StreamSink]:
    with StreamSink(tmp_path / "audit.duckdb", tmp_path / "snapshot.duckdb", 60.0) as s:
        yield s


@pytest.mark.parametrize("per_item", [False, True], ids=["one batch", "a batch per row"])
@pytest.mark.parametrize("arrival", list(itertools.permutations(OFFSETS)), ids=str)
def test_the_lowest_position_lands_whatever_the_arrival_order(
    sink: StreamSink, arrival: tuple[int, ...], per_item: bool
) -> None:
    state = Deliveries()
    outputs = [out for offset in arrival for out in state.offer(copy_at(offset), landed=False)]
    # The lifecycles get the event once, whichever copy is kept.
    assert [o for o in outputs if not isinstance(o, pvalue.TaggedOutput)] == [copy_at(arrival[0])]
    land(sink, list(landing_items(outputs)), per_item)
    assert deliveries(sink) == EXPECTED


@pytest.mark.parametrize("arrival", [(38, 45), (45, 38)], ids=str)
def test_the_rows_land_the_same_in_any_order_and_batching(
    tmp_path: Path, arrival: tuple[int, ...]
) -> None:
    # The landing stage too meets its input in no fixed order: every order of the dedupe
    # stage's rows, a micro-batch each, gives the same database.
    state = Deliveries()
    outputs = [out for offset in arrival for out in state.offer(copy_at(offset), landed=False)]
    items = list(landing_items(outputs))
    for n, order in enumerate(itertools.permutations(items)):
        with StreamSink(tmp_path / f"{n}.duckdb", tmp_path / f"{n}.snapshot.duckdb", 60.0) as s:
            land(s, list(order), per_item=True)
            assert deliveries(s) == EXPECTED[:2], order


@pytest.mark.parametrize("per_item", [False, True], ids=["one batch", "a batch per row"])
@pytest.mark.parametrize("landed_first", [True, False], ids=["landed first", "read first"])
def test_a_restart_moves_the_landed_row_to_a_lower_copy_read_again(
    sink: StreamSink, landed_first: bool, per_item: bool
) -> None:
    # A run that saw #45 first landed it and stopped before #38's rows landed; the restart
    # rebuilds #45 from DuckDB (no bytes) and reads #38 and #52 from Kafka again.
    land(sink, list(landing_items(Deliveries().offer(copy_at(45), landed=False))), False)
    landed = Accepted(EVENT_93, SourceRef(PARTITION, 45), 3, b"", None)
    state = Deliveries()
    offers = [(landed, True), (copy_at(38), False), (copy_at(52), False)]
    if not landed_first:
        offers.reverse()
    outputs = [out for delivery, was_landed in offers for out in state.offer(delivery, was_landed)]
    land(sink, list(landing_items(outputs)), per_item)
    assert deliveries(sink) == EXPECTED

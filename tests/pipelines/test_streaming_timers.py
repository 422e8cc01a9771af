"""Event-time deadlines on a runner that honours timers (Prism): BREACHED comes out once
the watermark passes the deadline and not before; a later action turns it RESOLVED_LATE."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.lifecycle import content_lifecycle
from pipelines.model import ActionEvent, ActionType, RequestEvent
from pipelines.policy import SlaPolicy
from pipelines.streaming_lifecycle import ReleaseLifecycles, to_timestamp
from tests.conftest import T0, action, request

pytestmark = pytest.mark.prism

H = timedelta(hours=1)
MS = timedelta(milliseconds=1)


def _at(event: Any) -> TimestampedValue:
    return TimestampedValue(event, to_timestamp(event.event_time))


def test_breach_fires_on_the_watermark_and_late_action_resolves_it(prism_location: str) -> None:
    on_time_request = request(1, content="c1")  # answered exactly at its deadline
    late_request = request(2, content="c2")  # answered six hours after it
    deadline = T0 + 24 * H
    stream = (
        EventStream()
        .add_elements([_at(on_time_request), _at(late_request)])
        .advance_watermark_to(to_timestamp(T0 + 23 * H))
        .advance_watermark_to(to_timestamp(deadline))
        # Arrives while the watermark stands at the deadline: in time, so no breach.
        .add_elements([_at(action(1, content="c1", hours=24))])
        .advance_watermark_to(to_timestamp(T0 + 25 * H))
        .add_elements([_at(action(2, content="c2", hours=30))])
        .advance_watermark_to(to_timestamp(T0 + 31 * H))
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(
        [
            "--runner=PrismRunner",
            f"--prism_location={prism_location}",
            "--environment_type=LOOPBACK",
        ]
    )
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        released = (
            p
            | stream
            | "Identity" >> beam.Map(lambda e: e).with_output_types(Any)
            | ReleaseLifecycles(SlaPolicy.load())
            | beam.Map(
                lambda r: (
                    r.lifecycle.request.request_id,
                    (r.watermark - T0) / H,
                    tuple(t.transition.value for t in r.lifecycle.transitions),
                )
            )
        )
        breach_hours = (deadline + MS - T0) / H
        assert_that(
            released,
            equal_to(
                [
                    ("R1", 0.0, ("OPENED",)),
                    ("R1", 24.0, ("OPENED", "RESOLVED")),
                    ("R2", 0.0, ("OPENED",)),
                    ("R2", breach_hours, ("OPENED", "BREACHED")),
                    ("R2", 30.0, ("OPENED", "BREACHED", "RESOLVED_LATE")),
                ]
            ),
        )


def _random_history(seed: int) -> tuple[list[Any], list[tuple[Any, float]]]:
    """Events for a few pieces of content, and their deliveries as (event, arrival hour):
    arrival = event time plus a lag, sometimes days, so some events arrive behind the
    watermark; some are delivered twice."""
    rng = random.Random(seed)
    events: list[Any] = []
    for i in range(40):
        content = f"c{rng.randrange(8)}"
        issued = rng.randrange(120 * 60) / 60  # whole minutes: event times are ms-precise
        events.append(request(i, content=content, hours=issued))
        for j in range(rng.choice([0, 1, 1, 2])):
            kind = rng.choice(
                [
                    ActionType.REMOVED,
                    ActionType.RESTRICTED,
                    ActionType.DECLINED,
                    ActionType.REINSTATED,
                ]
            )
            events.append(
                action(
                    100 * i + j,
                    content=content,
                    hours=issued
                    + rng.choice([rng.randrange(20 * 60), rng.randrange(20 * 60, 90 * 60)]) / 60,
                    kind=kind,
                    jurisdiction="RU" if kind is ActionType.RESTRICTED else None,
                    request_id=f"R{i}" if kind is ActionType.DECLINED else None,
                )
            )
    deliveries = []
    for event in events:
        hours = (event.event_time - T0) / H
        lag = rng.choice([0.1, 0.5, 2.0, 30.0])
        deliveries.append((event, hours + lag))
        if rng.random() < 0.1:
            deliveries.append((event, hours + lag + 5))
    deliveries.sort(key=lambda d: d[1])
    return events, deliveries


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_final_release_equals_the_batch_lifecycle(
    prism_location: str, seed: int, tmp_path: Path
) -> None:
    """Out-of-order, late and repeated deliveries; the watermark trails arrivals by 6 h.
    Once the watermark reaches the end, the last release of every request is exactly the
    batch path's lifecycle."""
    events, deliveries = _random_history(seed)
    stream = EventStream()
    watermark = T0 - H
    for event, arrival in deliveries:
        stream = stream.add_elements([_at(event)])
        candidate = T0 + timedelta(minutes=round((arrival - 6) * 60))
        if candidate > watermark + 6 * H:
            watermark = candidate
            stream = stream.advance_watermark_to(to_timestamp(watermark))
    stream = stream.advance_watermark_to_infinity()

    policy = SlaPolicy.load()
    expected = {}
    for content in {e.content_id for e in events}:
        for lc in content_lifecycle(
            [e for e in events if e.content_id == content and isinstance(e, RequestEvent)],
            [e for e in events if e.content_id == content and isinstance(e, ActionEvent)],
            policy,
        ):
            expected[lc.request.request_id] = lc.transitions

    options = PipelineOptions(
        [
            "--runner=PrismRunner",
            f"--prism_location={prism_location}",
            "--environment_type=LOOPBACK",
        ]
    )
    options.view_as(StandardOptions).streaming = True
    # Releases are collected through a file, not assert_that: assert_that groups its input,
    # and a grouping may drop what a late event re-releases behind the watermark (the DuckDB
    # sink, a plain ParDo, does not). LOOPBACK runs the SDK worker in this process.
    sink = tmp_path / "released.pickles"
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | stream
            | "Identity" >> beam.Map(lambda e: e).with_output_types(Any)
            | ReleaseLifecycles(policy)
            | beam.Map(_append, str(sink))
        )
    latest: dict[str, Any] = {}
    for released in sorted(_read_all(sink), key=lambda r: r.revision):
        latest[released.lifecycle.request.request_id] = released.lifecycle.transitions
    assert latest == expected


def _append(released: Any, path: str) -> None:
    record = pickle.dumps(released)
    with open(path, "ab") as f:  # one write per record: appends do not interleave
        f.write(len(record).to_bytes(4, "big") + record)


def _read_all(path: Path) -> list[Any]:
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        out.append(pickle.loads(data[i + 4 : i + 4 + size]))
        i += 4 + size
    return out

"""Event-time deadlines on a runner that honours timers (Prism): BREACHED comes out once
the watermark passes the deadline and not before; a later action turns it RESOLVED_LATE."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

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

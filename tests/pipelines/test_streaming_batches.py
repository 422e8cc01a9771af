"""Batches across stage boundaries: every element comes back once, at its own timestamp,
and a batch holds the watermark at its earliest item."""

from __future__ import annotations

import random
from typing import Any

import apache_beam as beam
from apache_beam.coders import registry
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.streaming_batches import Batch, BatchCoder, GatherPerBundle, unbatch
from tests.conftest import action, request


def test_batch_coder_is_registered_and_keeps_items_and_order() -> None:
    events = [request(1), action(2, hours=3), request(3, content="c2")]
    batch = Batch([(e, 1_000 * i) for i, e in enumerate(events)])
    coder = registry.get_coder(Batch)
    assert isinstance(coder, BatchCoder)
    assert coder.decode(coder.encode(batch)) == batch
    assert coder.estimate_size(batch) > 0


def _elements(seed: int) -> list[tuple[str, int]]:
    """(value, timestamp in µs) in a shuffled order, a few on the same timestamp."""
    rng = random.Random(seed)
    found = [(f"v{i}", rng.randrange(-5, 50) * 1_000_000) for i in range(200)]
    rng.shuffle(found)
    return found


def _with_stamp(value: Any, stamp: Any = beam.DoFn.TimestampParam) -> tuple[Any, int]:
    return value, stamp.micros


def test_unbatch_gives_every_element_back_once_at_its_own_timestamp() -> None:
    elements = _elements(1)
    with BeamPipeline() as p:
        back = (
            p
            | beam.Create([TimestampedValue(v, Timestamp(micros=at)) for v, at in elements])
            | GatherPerBundle(lambda v: str(int(v[1:]) % 3))
            | beam.FlatMap(unbatch)
            | beam.Map(_with_stamp)
        )
        assert_that(back, equal_to(elements))


def test_a_batch_is_keyed_and_stamped_with_its_earliest_item() -> None:
    elements = _elements(2)

    def check(element: tuple[str, Batch], stamp: Any = beam.DoFn.TimestampParam) -> list[str]:
        key, batch = element
        problems = []
        if stamp.micros != min(at for _, at in batch.items):
            problems.append(f"batch {key} stamped {stamp.micros}")
        problems += [f"{v} in batch {key}" for v, _ in batch.items if str(int(v[1:]) % 3) != key]
        return problems

    with BeamPipeline() as p:
        problems = (
            p
            | beam.Create([TimestampedValue(v, Timestamp(micros=at)) for v, at in elements])
            | GatherPerBundle(lambda v: str(int(v[1:]) % 3))
            | beam.FlatMap(check)
        )
        assert_that(problems, equal_to([]))

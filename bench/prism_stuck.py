"""Prism's stuck read watermark, reproduced without Kafka: why a bounded Kafka read ends on
a marker offset (`connectors.kafka_source._ReadPartitionFn._at_end_marker`).

    python -m bench.prism_stuck --runs 20                # the read's end as it was: no marker
    python -m bench.prism_stuck --runs 20 --end-marker   # the source's own end of a read

Each run is its own process: Impulse -> 16 ranges of 6 offsets -> a splittable DoFn that
emits one element per call (event time = its offset, its watermark at the last one) and
checkpoints with a 1 ms resume delay -> 40 branches of [key -> count, with an event-time
timer after the last element -> relay, with another timer] -> the counts checked.

What prism v2.77.0 does with it: it keeps one watermark estimate per SDF stage, the last
persisted checkpoint's, and refreshes at most ~11 changed stages at a time. A range that
finishes before its stage is refreshed after its last checkpoint leaves the stage with
input +inf and output at that checkpoint's estimate, for good; the timers never fire and
Prism fails the job ("nothing in progress and no refreshes with non zero pending
elements"). Without the marker, most runs fail that way. With it, the same DoFn ends its
ranges the source's way (`_at_end_marker`, the project's watermark estimator): no run
should.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from bench.run import prism_location
from connectors.kafka_source import (
    KafkaSourceSettings,
    PartitionRead,
    _PartitionRestrictions,
    _ReadPartitionFn,
)
from pipelines.streaming import prism_options

RANGES, OFFSETS, BRANCHES = 16, 6, 40
RESUME_DELAY = Duration(seconds=0.001)
BASE_S = 1_700_000_000
TIMER_AT = Timestamp(BASE_S + OFFSETS + 1_000)  # after every element
# No broker is asked: the DoFn's own reading is replaced (`_SyntheticRead._read`).
SETTINGS = KafkaSourceSettings("127.0.0.1:1", stop_at_end=True, max_out_of_orderness_s=0)
RUN_TIMEOUT_S = 150


class _SyntheticRead(_ReadPartitionFn):
    """The Kafka read's DoFn, its end included, with one synthetic record per call."""

    def _read(self, element: PartitionRead, tp: Any, tracker: Any, wm: Any) -> Iterator[Any]:
        offset = tracker.current_restriction().start
        if not tracker.try_claim(offset):
            return
        at = Timestamp(BASE_S + offset)
        wm.observe_event(at.micros)
        yield TimestampedValue((element.partition, offset), at)
        last = element.stop is not None and offset + 1 >= element.stop
        # At the last record, the marker is left to a checkpoint, as `_end_of_data` does.
        tracker.defer_remainder(None if last else RESUME_DELAY)


class _NoMarker(RestrictionProvider):  # type: ignore[misc]
    def initial_restriction(self, element: PartitionRead) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> Any:
        return _PartitionRestrictions().create_tracker(restriction)

    def restriction_size(self, element: PartitionRead, restriction: OffsetRange) -> float:
        return float(restriction.size())


_NO_MARKER_PARAM = beam.DoFn.RestrictionParam(_NoMarker())
_ESTIMATOR_PARAM = beam.DoFn.WatermarkEstimatorParam()  # the DoFn is its own provider


class _SyntheticReadNoMarker(_SyntheticRead):
    """The same, ending as the source did before the marker: the last record's call
    claims the range's end and leaves no checkpoint."""

    def process(
        self,
        element: PartitionRead,
        tracker: Any = _NO_MARKER_PARAM,
        wm: Any = _ESTIMATOR_PARAM,
    ) -> Iterator[Any]:
        offset = tracker.current_restriction().start
        if not tracker.try_claim(offset):
            return
        at = Timestamp(BASE_S + offset)
        wm.observe_event(at.micros)
        yield TimestampedValue((element.partition, offset), at)
        if offset + 1 < OFFSETS:
            tracker.defer_remainder(RESUME_DELAY)
        else:
            wm.finish()
            tracker.try_claim(OFFSETS)


class _Count(beam.DoFn):  # type: ignore[misc]
    COUNT = userstate.CombiningValueStateSpec("count", sum)
    DONE = userstate.TimerSpec("done", userstate.TimeDomain.WATERMARK)

    def process(
        self,
        _kv: tuple[str, int],
        count: Any = beam.DoFn.StateParam(COUNT),
        done: Any = beam.DoFn.TimerParam(DONE),
    ) -> None:
        count.add(1)
        done.set(TIMER_AT)

    @userstate.on_timer(DONE)  # type: ignore[untyped-decorator]
    def fire(
        self, key: Any = beam.DoFn.KeyParam, count: Any = beam.DoFn.StateParam(COUNT)
    ) -> Iterator[tuple[str, int]]:
        yield (key, count.read())


class _Relay(beam.DoFn):  # type: ignore[misc]
    VALUE = userstate.ReadModifyWriteStateSpec("value", beam.coders.VarIntCoder())
    DONE = userstate.TimerSpec("done", userstate.TimeDomain.WATERMARK)

    def process(
        self,
        kv: tuple[str, int],
        value: Any = beam.DoFn.StateParam(VALUE),
        done: Any = beam.DoFn.TimerParam(DONE),
    ) -> None:
        value.write(kv[1])
        done.set(TIMER_AT + Duration(seconds=1))

    @userstate.on_timer(DONE)  # type: ignore[untyped-decorator]
    def fire(
        self, key: Any = beam.DoFn.KeyParam, value: Any = beam.DoFn.StateParam(VALUE)
    ) -> Iterator[tuple[str, int]]:
        yield (key, value.read())


def run_once(prism: str, end_marker: bool) -> None:
    """One pipeline run; raises if Prism fails it or a count is wrong."""
    read_id = uuid.uuid4().hex
    members = tuple(("synthetic", p) for p in range(RANGES))
    reads = [
        PartitionRead(read_id, "synthetic", "removal.requests", p, 0, OFFSETS, members)
        for p in range(RANGES)
    ]
    options = prism_options(prism)  # the streaming job's own options
    reader = _SyntheticRead if end_marker else _SyntheticReadNoMarker
    with beam.Pipeline(options=options) as pipeline:
        read = pipeline | beam.Create(reads) | "Read" >> beam.ParDo(reader(SETTINGS))
        for b in range(BRANCHES):
            counts = (
                read
                | f"Key{b}" >> beam.Map(lambda e, b=b: (f"k{(e[0] * 7 + b) % RANGES}", e[1]))
                | f"Count{b}" >> beam.ParDo(_Count())
                | f"Relay{b}" >> beam.ParDo(_Relay())
            )
            expected = [(f"k{k}", OFFSETS) for k in range(RANGES)]
            assert_that(counts, equal_to(expected), label=f"Check{b}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--end-marker", action="store_true")
    args = parser.parse_args(argv)
    prism = prism_location()
    outcomes: dict[str, int] = {}
    for n in range(1, args.runs + 1):
        started = time.monotonic()
        # A fresh process per run; the DoFns come from this module, not from __main__.
        code = f"from bench.prism_stuck import run_once; run_once({prism!r}, {args.end_marker})"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
            if done.returncode == 0:
                outcome = "ok"
            elif "nothing in progress" in done.stderr:
                outcome = "stuck (Prism: nothing in progress)"
            else:
                outcome = f"failed otherwise: {done.stderr.strip().splitlines()[-1:]}"
        except subprocess.TimeoutExpired:
            outcome = f"no end after {RUN_TIMEOUT_S} s"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        print(f"run {n}: {outcome} ({time.monotonic() - started:.1f} s)", flush=True)
    ending = "end marker" if args.end_marker else "no end marker"
    print(f"{ending}: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    return 0 if set(outcomes) == {"ok"} else 1


if __name__ == "__main__":
    sys.exit(main())

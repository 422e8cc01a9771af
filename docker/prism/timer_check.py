#!/usr/bin/env python3
"""Does an event-time timer fire at the right moment? A TestStream experiment.

    .venv/bin/python docker/prism/timer_check.py                      # Prism, safe wiring
    .venv/bin/python docker/prism/timer_check.py --wiring direct      # Prism bug: see below
    .venv/bin/python docker/prism/timer_check.py --runner direct      # Beam's DirectRunner
    .venv/bin/python docker/prism/timer_check.py --runner fnapi       # FnApiRunner (batch)

One key. A stateful DoFn sets an event-time timer for t=100 s on its first element and
writes into every output a sequence number kept in state and how often the timer has
fired, so the order in which the runner invoked it is part of the output values and
`assert_that` (which compares multisets) checks the order too. The stream is

    element a @10 s
    watermark -> 50 s        the timer (100 s) must NOT fire
    element b @60 s          processed before the timer
    watermark -> 150 s       the timer must fire, exactly once, having seen a and b
    element late @40 s       behind the watermark: processed after the timer
    watermark -> +inf

and the only correct output is

    (0, 'element', 'a',    fired=0)
    (1, 'element', 'b',    fired=0)
    (2, 'timer',   100.0,  seen=('a', 'b'))
    (3, 'element', 'late', fired=1)

--runner
  prism   PrismRunner with a local binary: --prism-location PATH, else the one that
          docker/prism/build.py builds/caches for the installed Beam version (LOOPBACK).
  direct  DirectRunner as the project names it. With a TestStream in the pipeline it
          picks neither Prism nor the FnApiRunner but the BundleBasedDirectRunner.
  fnapi   The FnApiRunner cannot run a TestStream, so this feeds the same three
          elements as a bounded Create with timestamps. A batch runner has no watermark
          between elements (it jumps to +inf at the end), so the timer fires after every
          element: this mode is expected to FAIL and shows what the in-process runner does.

--wiring (TestStream runners only)
  rekey   (default) TestStream -> Map(identity).with_output_types(tuple[str, str])
          -> stateful ParDo. Correct on Prism 2.77.0.
  direct  TestStream -> stateful ParDo. Wrong on Prism 2.77.0: the timer fires before b
          with a TestStream KV coder (and, with other event orders, reads empty state),
          and Prism panics with "zero length key" if the TestStream also keeps its
          default FastPrimitivesCoder (--default-coder).

Exit 0: output exactly as expected. 1: the timer misbehaved or the pipeline failed.
2: usage or setup error (e.g. Prism could not be built).
"""

# ruff: noqa: B008  (Beam declares state/timer parameters as call defaults)
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import typing
from pathlib import Path

import apache_beam as beam
from apache_beam.coders import (
    BooleanCoder,
    FastPrimitivesCoder,
    StrUtf8Coder,
    TupleCoder,
    VarIntCoder,
)
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import BeamAssertException, assert_that
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue

TIMER_AT = 100  # seconds of event time

EXPECTED = [
    (0, "element", "a", 0),
    (1, "element", "b", 0),
    (2, "timer", float(TIMER_AT), ("a", "b")),
    (3, "element", "late", 1),
]

HERE = Path(__file__).resolve().parent


class TimerAt100(beam.DoFn):
    SEQ = ReadModifyWriteStateSpec("seq", VarIntCoder())
    FIRED = ReadModifyWriteStateSpec("fired", VarIntCoder())
    ARMED = ReadModifyWriteStateSpec("armed", BooleanCoder())
    SEEN = BagStateSpec("seen", StrUtf8Coder())
    TIMER = TimerSpec("t100", TimeDomain.WATERMARK)

    def process(
        self,
        element,
        seq=beam.DoFn.StateParam(SEQ),
        fired=beam.DoFn.StateParam(FIRED),
        armed=beam.DoFn.StateParam(ARMED),
        seen=beam.DoFn.StateParam(SEEN),
        timer=beam.DoFn.TimerParam(TIMER),
    ):
        _key, value = element
        n = seq.read() or 0
        seq.write(n + 1)
        seen.add(value)
        if not armed.read():
            armed.write(True)
            timer.set(TIMER_AT)
        yield (n, "element", value, fired.read() or 0)

    @on_timer(TIMER)
    def on_t100(
        self,
        fire_ts=beam.DoFn.TimestampParam,
        seq=beam.DoFn.StateParam(SEQ),
        fired=beam.DoFn.StateParam(FIRED),
        seen=beam.DoFn.StateParam(SEEN),
    ):
        n = seq.read() or 0
        seq.write(n + 1)
        fired.write((fired.read() or 0) + 1)
        yield (n, "timer", float(fire_ts), tuple(sorted(seen.read())))


def check_output(actual):
    """assert_that matcher: prints what the runner produced (in invocation order), then
    compares. Runs on the SDK worker: this process for LOOPBACK and the in-process runners."""
    got = sorted(actual, key=lambda r: r[0])
    print("observed (in the order the DoFn was invoked):", flush=True)
    for row in got:
        print(f"  {row!r}", flush=True)
    if got != EXPECTED:
        raise BeamAssertException(f"timer misbehaved:\n  expected {EXPECTED}\n  got      {got}")


def stream_source(default_coder: bool = False) -> TestStream:
    # A two-component TupleCoder is encoded as beam:coder:kv:v1, which Prism needs to
    # key a stateful stage that reads the TestStream output directly; the default
    # FastPrimitivesCoder is opaque to it ("zero length key" panic).
    coder = FastPrimitivesCoder() if default_coder else TupleCoder([StrUtf8Coder(), StrUtf8Coder()])
    return (
        TestStream(coder=coder)
        .add_elements([TimestampedValue(("k", "a"), 10)])
        .advance_watermark_to(50)
        .add_elements([TimestampedValue(("k", "b"), 60)])
        .advance_watermark_to(150)
        .add_elements([TimestampedValue(("k", "late"), 40)])
        .advance_watermark_to_infinity()
    )


class BoundedSource(beam.PTransform):
    def expand(self, pbegin):
        return (
            pbegin
            | beam.Create([("k", "a", 10), ("k", "b", 60), ("k", "late", 40)])
            | beam.Map(lambda r: TimestampedValue((r[0], r[1]), r[2]))
        )


def prism_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    proc = subprocess.run(
        [sys.executable, str(HERE / "build.py")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        print(f"docker/prism/build.py failed (exit {proc.returncode})", file=sys.stderr)
        raise SystemExit(2)
    return proc.stdout.strip()


def pipeline_args(args) -> tuple[PipelineOptions, object]:
    if args.runner == "fnapi":
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        return PipelineOptions([]), fn_runner.FnApiRunner()
    if args.runner == "prism":
        flags = [
            "--runner=PrismRunner",
            f"--prism_location={prism_binary(args.prism_location)}",
            "--environment_type=LOOPBACK",
            f"--prism_log_level={args.prism_log_level}",
        ]
    else:
        flags = ["--runner=DirectRunner"]
    opts = PipelineOptions(flags)
    opts.view_as(StandardOptions).streaming = True
    return opts, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runner", choices=["prism", "direct", "fnapi"], default="prism")
    p.add_argument("--wiring", choices=["rekey", "direct"], default="rekey")
    p.add_argument(
        "--default-coder",
        action="store_true",
        help="give TestStream its default FastPrimitivesCoder instead of a KV TupleCoder",
    )
    p.add_argument("--prism-location", help="Prism binary (default: build.py's cached one)")
    p.add_argument("--prism-log-level", default="error", choices=["debug", "info", "warn", "error"])
    p.add_argument("-v", "--verbose", action="store_true", help="Beam INFO logs, full traceback")
    args = p.parse_args(argv)
    logging.basicConfig(force=True, level=logging.INFO if args.verbose else logging.ERROR)

    options, runner = pipeline_args(args)
    if args.runner == "fnapi":
        source, desc = BoundedSource(), "bounded Create"
    else:
        source = stream_source(default_coder=args.default_coder)
        desc = (
            f"TestStream ({'FastPrimitivesCoder' if args.default_coder else 'KV coder'}), "
            f"wiring={args.wiring}"
        )
    print(f"runner: {args.runner}  source: {desc}", flush=True)

    t0 = time.monotonic()
    try:
        with beam.Pipeline(runner=runner, options=options) as pipeline:
            events = pipeline | "Source" >> source
            if args.runner != "fnapi" and args.wiring == "rekey":
                events = events | "Rekey" >> beam.Map(lambda kv: kv).with_output_types(
                    tuple[str, str]
                )
            out = events | "Timer" >> beam.ParDo(TimerAt100()).with_output_types(typing.Any)
            assert_that(out, check_output)
    except Exception as e:  # any failure means the check did not pass
        elapsed = time.monotonic() - t0
        if args.verbose:
            raise
        msg = str(e)
        marker = "timer misbehaved:\n  expected ["
        if marker in msg:
            # The first three lines of the assertion message: header, expected, got.
            detail = "\n".join(msg[msg.find(marker) :].splitlines()[:3])
            detail = detail.split(" [while running")[0]
        else:
            detail = "\n".join(msg.splitlines()[:3])[:1500]
        print(f"FAIL ({elapsed:.1f}s): {type(e).__name__}: {detail}")
        return 1
    elapsed = time.monotonic() - t0
    print(
        f"PASS ({elapsed:.1f}s): the event-time timer fired once at {TIMER_AT}s, "
        "after b and before the late element"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the streaming job's memory goes: its in-process state, measured per event.

The streaming job keeps its operator state in the worker process (`pipelines.process_state`):
the dedupe stage keeps one delivery of every event_id (`streaming_dedupe.Deliveries`),
the lifecycle stage every event of every content and the signature of what it released
of every request (`streaming_lifecycle.LifecycleReleaser`). This feeds a generated workload
through those two objects exactly as the stages do (each stage gets its own copy of an
element, as a stage boundary's pickle gives it), releases lifecycles as a watermark one
hour behind the newest event passes their moments, and reports what each holds (traced
Python allocations) per event kept. Both grow with every event, by design, not with the
requests still open. tracemalloc makes it slow: about 3 minutes for 100k events.

    python -m bench.state_memory --events 100000
"""

from __future__ import annotations

import argparse
import heapq
import json
import pickle
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bench.workload import Workload, ensure_workload
from connectors.avro_files import RawMessage
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.intake import Accepted, IntakeRules, take_in
from pipelines.model import epoch_micros
from pipelines.policy import SlaPolicy
from pipelines.settings import Settings
from pipelines.streaming_dedupe import Deliveries
from pipelines.streaming_lifecycle import LifecycleReleaser

WATERMARK_LAG_US = 3_600_000_000  # the watermark trails the newest event by an hour


def accepted_events(workload: Workload, store: SchemaStore, rules: IntakeRules) -> Iterator[Any]:
    """Every accepted delivery of the workload, in arrival order (refusals are skipped)."""
    for position, (topic, key, value, ms) in enumerate(workload.raw_messages()):
        sent = datetime.fromtimestamp(ms / 1000, UTC)
        result = take_in(
            RawMessage(topic, key, value, sent), SourceRef(topic, position), store, rules
        )
        if isinstance(result, Accepted):
            yield result


def measure(workload: Workload) -> dict[str, Any]:
    settings = Settings()
    store = SchemaStore.load(settings.schemas_dir)
    rules = IntakeRules.from_settings(settings)
    policy = SlaPolicy.load(default_sla=settings.default_sla)
    dedupe = Deliveries()
    releaser = LifecycleReleaser(policy)
    moments: list[int] = []
    newest = 0
    deliveries = kept = 0
    held = {"dedupe": 0, "lifecycle": 0}
    started = time.monotonic()
    tracemalloc.start()
    for delivery in accepted_events(workload, store, rules):
        deliveries += 1
        frame = pickle.dumps(delivery)
        # The dedupe stage's own copy: what it keeps stays allocated, the rest is freed.
        before = tracemalloc.get_traced_memory()[0]
        copy = pickle.loads(frame)
        outputs = list(dedupe.offer(copy, landed=False))
        is_kept = any(out is copy for out in outputs)
        del copy, outputs
        held["dedupe"] += tracemalloc.get_traced_memory()[0] - before
        if not is_kept:
            continue
        kept += 1
        # The lifecycle stage's own copy of the event.
        event_frame = pickle.dumps(delivery.event)
        before = tracemalloc.get_traced_memory()[0]
        event = pickle.loads(event_frame)
        newest = max(newest, epoch_micros(event.event_time))
        _, arms = releaser.add(event)
        while True:  # timers set, then fired as the watermark passes them
            for moment in arms:
                heapq.heappush(moments, moment)
            if not moments or moments[0] > newest - WATERMARK_LAG_US:
                break
            _, arms = releaser.fire(heapq.heappop(moments))
        del event
        held["lifecycle"] += tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "deliveries": deliveries,
        "events_kept": kept,
        "bytes": held,
        "bytes_per_event": {stage: size / kept for stage, size in held.items()},
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    result = measure(ensure_workload(args.events, args.seed))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

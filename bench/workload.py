"""The benchmark workload: millions of calibrated events as raw-message Avro files, cached.

`generate(events, out_dir, seed)` writes `requests-NNNN.avro` and `actions-NNNN.avro`
(at most 500,000 messages each, arrival order within a file) and `manifest.json` into
`out_dir`: the input format of `removal-audit run DIR` and `removal-audit publish`, as
`removal-audit generate` writes it (topic without prefix, key "platform/content_id", value
a single-object encoded event, timestamp the arrival time). `ensure_workload(events, seed)`
reuses the copy cached under `${XDG_CACHE_HOME:-~/.cache}/removal-audit/bench/`.

What is drawn, and from which published figures, is in `bench.calibration`; how, in
`bench.plan`; the encoding in `bench.payloads` and `bench.encoding`. Deterministic: the same
(events, seed) gives byte-identical files.

    python -m bench.workload --events 1000000 [--seed 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import calibration as cal
from bench.encoding import (
    RawMessageFileWriter,
    avro_string,
    read_raw_message_file,
    timestamp_varints,
)
from bench.payloads import PayloadEncoder, expected_action, expected_request
from bench.plan import DUPLICATE, MALFORMED, VALID, Messages, Plan, plan
from bench.publish import PublishResult, publish_workload
from connectors.avro_codec import encode_single_object
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC
from pipelines.policy import SlaPolicy
from pipelines.scenarios.delivery import ACTIONS_SUBJECT, REQUESTS_SUBJECT

__all__ = [
    "GENERATOR_VERSION",
    "PublishResult",
    "Workload",
    "ensure_workload",
    "generate",
    "publish_workload",
]

# Bump whenever the same (events, seed) would give other bytes: it names the cache entry.
GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 65_536
_SELF_CHECK = 64  # valid events of each topic compared with the slow encoder


@dataclass(frozen=True)
class Workload:
    """A generated workload on disk; `messages` = events + duplicates + malformed."""

    directory: Path
    files: tuple[Path, ...]
    events: int
    requests: int
    actions: int
    duplicates: int
    malformed: int
    messages: int
    first_event_time: datetime
    last_event_time: datetime

    @classmethod
    def load(cls, directory: Path) -> Workload:
        """The workload whose manifest is in `directory`."""
        m = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return cls(
            directory=directory,
            files=tuple(sorted(directory / name for name in m["files"])),
            events=m["events"],
            requests=m["requests"],
            actions=m["actions"],
            duplicates=m["duplicates"],
            malformed=m["malformed"],
            messages=m["messages"],
            first_event_time=datetime.fromisoformat(m["first_event_time"]),
            last_event_time=datetime.fromisoformat(m["last_event_time"]),
        )

    def raw_messages(self) -> Iterator[tuple[str, bytes | None, bytes, int]]:
        """(topic without prefix, key, value, timestamp_ms) in arrival order across all files."""

        def read(
            index: int, path: Path
        ) -> Iterator[tuple[int, int, int, str, bytes | None, bytes]]:
            for position, (topic, key, value, ms) in enumerate(read_raw_message_file(path)):
                yield ms or 0, index, position, topic, key, value

        for ms, _, _, topic, key, value in heapq.merge(
            *(read(i, p) for i, p in enumerate(self.files))
        ):
            yield topic, key, value, ms


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "removal-audit" / "bench"


def ensure_workload(events: int, seed: int = 6) -> Workload:
    """The cached workload for (events, seed), generated first if missing.

    Generated into a temporary directory beside the cache entry, then renamed into place,
    so a crash leaves no half-written entry and two concurrent callers both end with one.
    """
    final = cache_root() / f"workload-v{GENERATOR_VERSION}-{events}-{seed}"
    if (final / MANIFEST).is_file():
        return Workload.load(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        generate(events, scratch, seed)
        try:
            scratch.rename(final)
        except OSError:
            if not (final / MANIFEST).is_file():
                raise  # not another caller's finished copy: a real failure
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Workload.load(final)


def generate(events: int, out_dir: Path, seed: int = 6) -> Workload:
    """Write a workload of exactly `events` valid events into `out_dir` (new or empty of
    .avro files); see the module docstring. Raises FileExistsError when `out_dir` already
    holds .avro files (a reader of the directory would mix them in)."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob("*.avro")):
        raise FileExistsError(f"{out_dir} already holds .avro files")
    store = SchemaStore.load()
    drawn = plan(events, seed, SlaPolicy.load())
    _self_check(drawn, store, seed)
    encoder = PayloadEncoder(drawn, store)
    files: list[str] = []
    for topic, stem, messages, encode in (
        (REQUESTS_TOPIC, "requests", drawn.requests_topic, encoder.requests),
        (ACTIONS_TOPIC, "actions", drawn.actions_topic, encoder.actions),
    ):
        topic_piece = avro_string(topic)
        total = len(messages.kind)
        for shard, first in enumerate(range(0, total, cal.MAX_MESSAGES_PER_FILE)):
            last = min(total, first + cal.MAX_MESSAGES_PER_FILE)
            name = f"{stem}-{shard:04d}.avro"
            marker = sync_marker(events, seed, name)
            with RawMessageFileWriter(out_dir / name, store, marker) as out:
                for start in range(first, last, _CHUNK):
                    stop = min(last, start + _CHUNK)
                    stamps = timestamp_varints(messages.arrival[start:stop])
                    out.add(topic_piece, encode(messages, start, stop), stamps)
            files.append(name)

    times = np.concatenate([drawn.request_event_times(), drawn.act_at])
    manifest: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "events": events,
        "seed": seed,
        "requests": len(drawn.req_issued) + len(drawn.wd_request),
        "actions": len(drawn.act_at),
        "duplicates": _count(drawn.requests_topic, DUPLICATE)
        + _count(drawn.actions_topic, DUPLICATE),
        "malformed": _count(drawn.requests_topic, MALFORMED)
        + _count(drawn.actions_topic, MALFORMED),
        "first_event_time": _iso(int(times.min())),
        "last_event_time": _iso(int(times.max())),
        "files": sorted(files),
        "mean_rate_per_s": cal.MEAN_RATE_PER_S,
        "seconds": round(time.perf_counter() - started, 3),
    }
    manifest["messages"] = events + manifest["duplicates"] + manifest["malformed"]
    if manifest["requests"] + manifest["actions"] != events:
        raise AssertionError("the plan does not hold the requested number of events")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Workload.load(out_dir)


def sync_marker(events: int, seed: int, name: str) -> bytes:
    """The file's sync marker: fixed by (events, seed, file name), so reruns give the same
    bytes (fastavro would draw a random one)."""
    return hashlib.sha256(f"{GENERATOR_VERSION}/{events}/{seed}/{name}".encode()).digest()[:16]


def _self_check(drawn: Plan, store: SchemaStore, seed: int) -> None:
    """Encode a sample of valid events both ways and compare bytes, before anything is
    written: a schema the fast encoder has drifted from fails here, not in the pipeline."""
    encoder = PayloadEncoder(drawn, store)
    rng = np.random.Generator(np.random.PCG64(seed))
    for messages, encode, expected, subject in (
        (drawn.requests_topic, encoder.requests, expected_request, REQUESTS_SUBJECT),
        (drawn.actions_topic, encoder.actions, expected_action, ACTIONS_SUBJECT),
    ):
        positions = np.flatnonzero(messages.kind == VALID)
        if not len(positions):
            continue
        sample = rng.choice(positions, size=min(_SELF_CHECK, len(positions)), replace=False)
        for position in sample.tolist():
            probe = Messages(*(column[position : position + 1] for column in _columns(messages)))
            value = encode(probe, 0, 1)[0][1]
            event = expected(drawn, int(messages.row[position]))
            if value != encode_single_object(event.to_avro(), subject, store):
                raise AssertionError(f"fast encoding differs for {event}")


def _columns(m: Messages) -> tuple[np.ndarray, ...]:
    return (m.kind, m.row, m.arrival, m.cut)


def _count(messages: Messages, kind: int) -> int:
    return int(np.count_nonzero(messages.kind == kind))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workload", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, required=True, help="valid events to generate")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", type=Path, help="directory to write (default: the cache)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.out is None:
        workload = ensure_workload(args.events, args.seed)
    else:
        workload = generate(args.events, args.out, args.seed)
    elapsed = time.perf_counter() - started
    span = (workload.last_event_time - workload.first_event_time).total_seconds()
    print(f"workload in {workload.directory} ({len(workload.files)} files), {elapsed:.1f} s")
    print(
        f"events {workload.events:,} (requests {workload.requests:,}, actions "
        f"{workload.actions:,}); duplicates {workload.duplicates:,}; malformed "
        f"{workload.malformed:,}; messages {workload.messages:,}"
    )
    print(
        f"event time {workload.first_event_time.isoformat()} .. "
        f"{workload.last_event_time.isoformat()} ({span / 3600:.1f} h)"
    )
    print(f"{workload.messages / elapsed:,.0f} messages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

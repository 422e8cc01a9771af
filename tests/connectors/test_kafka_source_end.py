"""The end of a bounded (`stop_at_end`) Kafka read, driven call by call as a runner would.

Each partition's range ends with a marker offset that no record fills. Reaching its last
record, a partition checkpoints before the marker. At the marker it checkpoints until
every partition of the read is done, then once more with the watermark at +inf, then
finishes. So no partition's last checkpoint leaves Prism a watermark estimate below +inf
to get stuck at (see `_ReadPartitionFn._at_end_marker`), and +inf is never reported while
a record is still to come.

These tests drive `_ReadPartitionFn` on the real broker: each call gets its restriction
and watermark state from the previous call's checkpoint, as a runner would hand them over.
The partitions' calls are interleaved in turn.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from connectors.kafka_source import (
    KafkaSourceSettings,
    PartitionRead,
    _PartitionRestrictions,
    _ReadPartitionFn,
    list_partition_reads,
)
from connectors.kafka_watermark import EventTimeWatermark, PeerWatermarks, WatermarkState
from connectors.schema_store import SchemaStore
from tests.conftest import message, request

REQUESTS = "removal.requests"
RECORDS = {0: 23, 1: 4}  # records per partition when the read is listed
CALL_LIMIT = 200
S = 1_000_000


@dataclass(frozen=True)
class Call:
    """One process call: the offsets it emitted and the checkpoint it left (if any)."""

    partition: int
    restriction: OffsetRange
    offsets: tuple[int, ...]
    residual: OffsetRange | None
    delay: Duration | None
    watermark: Timestamp | None  # what the residual reports, as the SDK reads it


def _drive(fn: _ReadPartitionFn, reads: list[PartitionRead]) -> list[Call]:
    provider = _PartitionRestrictions()
    work: deque[tuple[PartitionRead, OffsetRange, Any]] = deque(
        (r, provider.initial_restriction(r), fn.initial_estimator_state(r, None)) for r in reads
    )
    calls: list[Call] = []
    while work:
        read, restriction, state = work.popleft()
        tracker = ThreadsafeRestrictionTracker(provider.create_tracker(restriction))
        wm = fn.create_watermark_estimator(state)
        out = list(fn.process(read, RestrictionTrackerView(tracker), wm))
        tracker.check_done()  # what the SDK checks after every call
        status = tracker.deferred_status()
        offsets = tuple(value.value[0].position for value in out)
        if status is None:
            calls.append(Call(read.partition, restriction, offsets, None, None, None))
        else:
            residual, delay = status
            watermark = wm.current_watermark()
            calls.append(Call(read.partition, restriction, offsets, residual, delay, watermark))
            work.append((read, residual, wm.get_estimator_state()))
        assert len(calls) < CALL_LIMIT, f"the read did not end: {calls[-4:]}"
    return calls


@pytest.mark.kafka
def test_a_bounded_read_reports_its_end_once_every_partition_is_done(
    kafka_bootstrap: str, store: SchemaStore, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}."
    topic = prefix + REQUESTS
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=20_000)
    admin.create_topics([NewTopic(topic, len(RECORDS), 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def send(partition: int, count: int, first: int) -> None:
        for n in range(first, first + count):
            value = message(store, request(n, content=f"c{n}", hours=n)).value
            producer.send(topic, value=value, partition=partition)
        producer.flush(timeout=20)

    for partition, count in RECORDS.items():
        send(partition, count, 100 * partition)
    settings = KafkaSourceSettings(
        kafka_bootstrap,
        topics=(REQUESTS,),
        topic_prefix=prefix,
        stop_at_end=True,
        max_records_per_read=10,
        poll_timeout_ms=100,
    )
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=20_000)
    reads = list_partition_reads(consumer, settings, uuid.uuid4().hex)
    consumer.close()
    send(0, 3, 50)  # published after the read was listed: not this read's
    producer.close()

    fn = _ReadPartitionFn(settings)
    fn.setup()
    try:
        with caplog.at_level(logging.INFO, logger="connectors.kafka_source"):
            calls = _drive(fn, reads)
    finally:
        fn.teardown()

    for partition, count in RECORDS.items():
        mine = [c for c in calls if c.partition == partition]
        # Every record listed, once, in order; the three sent later are left alone.
        assert [o for c in mine for o in c.offsets] == list(range(count))
        # The marker (offset `count`) is claimed last, by a call that leaves no checkpoint.
        assert mine[-1].restriction == OffsetRange(count, count + 1)
        assert mine[-1].residual is None and mine[-1].offsets == ()
        # Its checkpoint before that reported +inf: no estimate below it is left behind.
        assert mine[-2].residual == OffsetRange(count, count + 1)
        assert mine[-2].watermark == MAX_TIMESTAMP
    # +inf only once every record of every partition was out, then once per partition.
    last_record = max(i for i, c in enumerate(calls) if c.offsets)
    ends = [i for i, c in enumerate(calls) if c.watermark == MAX_TIMESTAMP]
    assert len(ends) == len(RECORDS) and min(ends) > last_record
    # Partition 1 was done first: its marker waited for partition 0 with the idle delay.
    waits = [c for c in calls[:last_record] if c.partition == 1 and c.residual is not None]
    assert waits[-1].residual == OffsetRange(RECORDS[1], RECORDS[1] + 1)
    assert waits[-1].watermark is not None and waits[-1].watermark < MAX_TIMESTAMP
    assert waits[-1].delay is not None and waits[-1].delay > Duration(seconds=0)
    # And said what it waited for, once (every 30 s), not as a warning (silent < 60 s).
    said = [r for r in caplog.records if "is read to its end" in r.getMessage()]
    assert [(r.levelno, r.getMessage().split(" (silent")[0]) for r in said] == [
        (logging.INFO, f"{topic}/1 is read to its end; the read waits for {topic}/0")
    ]


def test_an_empty_partition_of_a_bounded_read_only_has_its_end_to_report() -> None:
    settings = KafkaSourceSettings("127.0.0.1:1", stop_at_end=True)  # no broker is asked
    read = PartitionRead(uuid.uuid4().hex, "t", REQUESTS, 0, 7, 7, (("t", 0),))
    fn = _ReadPartitionFn(settings)
    fn.setup()
    try:
        calls = _drive(fn, [read])
    finally:
        fn.teardown()
    assert [(c.restriction, c.residual, c.watermark) for c in calls] == [
        (OffsetRange(7, 8), OffsetRange(7, 8), MAX_TIMESTAMP),
        (OffsetRange(7, 8), None, None),
    ]


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_bounded_read_waits_for_every_partition_read_here_however_silent() -> None:
    clock, peers = _Clock(1_000.0), PeerWatermarks()
    keys = tuple(("t", p) for p in range(3))

    def estimator(partition: int) -> EventTimeWatermark:
        read = PartitionRead("read-1", "t", REQUESTS, partition, 0, 10, keys)
        state = WatermarkState(MIN_TIMESTAMP.micros, None, clock(), read)
        return EventTimeWatermark(state, 10.0, 30.0, 60.0, clock, peers)

    first, second = estimator(0), estimator(1)
    first.observe_event(500 * S)
    second.observe_event(400 * S)
    assert first.current_watermark() == MIN_TIMESTAMP  # partition 2 not heard of yet
    second.current_watermark()  # partition 1 is read here: a checkpoint reported it
    first.finish()
    assert not first.read_finished()
    clock.now += 61
    # Partition 2 was never heard of here (read elsewhere): after the expiry it no longer
    # counts. Partition 1 was, and has been silent as long, as when the runner has not
    # scheduled it for a minute: the read is not done until it finishes.
    # Nor does it leave the combined estimate: +inf here would put what partition 1 reads
    # next behind the watermark.
    assert first.current_watermark() == Timestamp(390)
    assert not first.read_finished()
    assert first.unfinished_peers() == [(("t", 1), 61.0)]
    second.finish()
    assert first.read_finished() and second.read_finished()
    assert first.current_watermark() == MAX_TIMESTAMP
    assert first.unfinished_peers() == []

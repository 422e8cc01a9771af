"""ReadFromKafka: every record exactly once with its bytes and event time, resumable from
offsets, with a watermark that moves during the read and leaves nothing late.

The unit tests pin the pieces (settings, event time, watermark estimator); the broker tests
run the read on the real Kafka broker and on Prism, with a bounded (`stop_at_end`) read.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from connectors.avro_files import RawMessage
from connectors.kafka_source import (
    KafkaSourceError,
    KafkaSourceSettings,
    PartitionRead,
    ReadFromKafka,
    event_time,
    list_partition_reads,
)
from connectors.kafka_watermark import (
    EventTimeWatermark,
    PeerWatermarks,
    WatermarkState,
    element_stamp,
)
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.model import RequestEventType
from pipelines.model import epoch_micros as to_micros
from tests.conftest import T0, action, message, request

TOPICS = ("removal.requests", "removal.actions")
# Nine in ten events are requests (3 partitions), one in ten actions (2 of 3 partitions):
# a read of 25 actions spans ten times the event time of 25 requests, so a runner that let
# one partition's watermark stand for all would put requests behind it.
EVENTS = 1_980
LAG_S = 600.0  # events are shuffled within blocks of 10, 36 s apart: at most 324 s out of order
PIPELINE_BUDGET_S = 45.0
GARBAGE = [b"", b"not avro", b"\xc3\x01" + bytes(8) + b"body", b"\x00\x00\x00\x7f\xffjunk"]
S = 1_000_000


# --- Pieces, no broker --------------------------------------------------------------------


def test_settings_pass_security_through_and_keep_passwords_out_of_repr() -> None:
    offsets = {("removal.requests", 0): 7}
    settings = KafkaSourceSettings(
        "b:9092",
        start_offsets=offsets,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="auditor",
        sasl_plain_password="s3cret-pw",
        ssl_cafile="ca.pem",
    )
    offsets[("removal.requests", 0)] = 99  # the settings keep their own copy
    config = settings.consumer_config()
    assert config["sasl_plain_password"] == "s3cret-pw"
    assert config["security_protocol"] == "SASL_SSL"
    assert config["ssl_cafile"] == "ca.pem"
    assert config["enable_auto_commit"] is False
    assert "ssl_keyfile" not in config  # unset options are left to kafka-python's defaults
    assert "s3cret-pw" not in repr(settings)
    assert settings.start_offsets == {("removal.requests", 0): 7}
    with pytest.raises(ValueError):
        KafkaSourceSettings("b:9092", max_read_s=0)


def test_event_time_comes_from_the_payload(store: SchemaStore) -> None:
    issued = request(1, hours=2)
    withdrawn = dataclasses.replace(
        issued, event_type=RequestEventType.WITHDRAWN, withdrawn_at=T0 + timedelta(hours=5)
    )
    assert event_time(message(store, issued), store) == T0 + timedelta(hours=2)
    assert event_time(message(store, withdrawn), store) == T0 + timedelta(hours=5)
    assert event_time(message(store, action(1, hours=3)), store) == T0 + timedelta(hours=3)
    for payload in GARBAGE:
        assert event_time(RawMessage("removal.requests", None, payload), store) is None
    valid = message(store, issued)
    assert event_time(RawMessage("elsewhere", None, valid.value), store) is None


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _read(partition: int, members: int = 1) -> PartitionRead:
    keys = tuple(("t", p) for p in range(members))
    return PartitionRead("read-1", "t", "removal.requests", partition, 0, None, keys)


def _estimator(
    clock: _Clock, partition: int = 0, members: int = 1, peers: PeerWatermarks | None = None
) -> EventTimeWatermark:
    state = WatermarkState(MIN_TIMESTAMP.micros, None, clock(), _read(partition, members))
    return EventTimeWatermark(state, 10.0, 30.0, 60.0, clock, peers or PeerWatermarks())


def test_watermark_is_max_event_time_minus_lag_and_never_moves_back() -> None:
    clock = _Clock(1_000.0)
    wm = _estimator(clock)
    assert wm.current_watermark() == MIN_TIMESTAMP
    wm.observe_timestamp(Timestamp(999_999))  # Beam's per-output call: ignored
    assert wm.current_watermark() == MIN_TIMESTAMP
    wm.observe_event(500 * S)
    assert wm.current_watermark() == Timestamp(490)
    wm.observe_event(400 * S)  # out of order: the max holds
    assert wm.current_watermark() == Timestamp(490)
    restored = EventTimeWatermark(wm.get_estimator_state(), 10.0, 30.0, 60.0, clock)
    assert restored.current_watermark() == Timestamp(490)  # what a checkpoint keeps


def test_idle_partition_moves_to_wall_clock_only_when_caught_up() -> None:
    clock = _Clock(1_000.0)
    wm = _estimator(clock)
    wm.observe_event(500 * S)
    clock.now += 31  # idle for longer than 30 s ...
    assert wm.current_watermark() == Timestamp(490)  # ... but not known to be caught up
    wm.note_caught_up(True)
    assert wm.current_watermark() == Timestamp(1_031 - 10)
    wm.observe_event(1_025 * S)  # a new event ends the idleness; the watermark stays
    clock.now += 5
    assert wm.current_watermark() == Timestamp(1_021)


def test_peer_watermarks_report_the_min_of_the_read_until_peers_finish_or_expire() -> None:
    clock, peers = _Clock(1_000.0), PeerWatermarks()
    first = _estimator(clock, partition=0, members=2, peers=peers)
    second = _estimator(clock, partition=1, members=2, peers=peers)
    first.observe_event(500 * S)
    assert first.current_watermark() == MIN_TIMESTAMP  # partition 1 not heard of yet
    second.observe_event(300 * S)
    assert second.current_watermark() == Timestamp(290)
    assert first.current_watermark() == Timestamp(290)
    assert first.get_estimator_state().watermark_us == 490 * S  # its own value is kept
    second.finish()
    assert first.current_watermark() == Timestamp(490)
    third = _estimator(clock, partition=0, members=2, peers=PeerWatermarks())
    third.observe_event(500 * S)
    assert third.current_watermark() == MIN_TIMESTAMP
    clock.now += 61  # partition 1 is read by another worker: after a while it stops counting
    assert third.current_watermark() == Timestamp(490)


# --- Real broker ----------------------------------------------------------------------------


def _create_topics(bootstrap: str, prefix: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    try:
        admin.create_topics([NewTopic(prefix + t, partitions, 1) for t in TOPICS])
    finally:
        admin.close()


@pytest.mark.kafka
def test_listing_checks_topics_and_start_offsets(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"l{uuid.uuid4().hex[:8]}."
    _create_topics(kafka_bootstrap, prefix, partitions=1)
    requests = prefix + "removal.requests"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(10):
        producer.send(requests, value=b"%d" % n, partition=0)
    producer.flush(timeout=20)
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=20_000)
    admin.delete_records({TopicPartition(requests, 0): 4}, timeout_ms=20_000)
    admin.close()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=20_000)
    try:
        settings = KafkaSourceSettings(kafka_bootstrap, topic_prefix=prefix, stop_at_end=True)
        reads = {r.topic: r for r in list_partition_reads(consumer, settings, "r")}
        assert (reads[requests].start, reads[requests].stop) == (4, 10)  # 0..3 are deleted
        assert (reads[prefix + "removal.actions"].start, reads[requests].partition) == (0, 0)
        assert reads[requests].members == ((requests, 0), (prefix + "removal.actions", 0))
        resumed = dataclasses.replace(settings, start_offsets={(requests, 0): 7})
        assert list_partition_reads(consumer, resumed, "r")[0].start == 7
        deleted = dataclasses.replace(settings, start_offsets={(requests, 0): 2})
        with caplog.at_level(logging.WARNING, logger="connectors.kafka_source"):
            assert list_partition_reads(consumer, deleted, "r")[0].start == 4
        assert "offsets 2..3 were deleted unread" in caplog.text
        past_end = dataclasses.replace(settings, start_offsets={(requests, 0): 11})
        with pytest.raises(KafkaSourceError, match="past the log end"):
            list_partition_reads(consumer, past_end, "r")
        missing = dataclasses.replace(settings, topic_prefix="no-such-prefix.")
        with pytest.raises(KafkaSourceError, match="does not exist"):
            list_partition_reads(consumer, missing, "r")
    finally:
        consumer.close()


Row = tuple[str, int, str, bytes | None, bytes, int, int]  # what the read must reproduce


def _publish(bootstrap: str, prefix: str, store: SchemaStore) -> list[Row]:
    """Send the events (shuffled in blocks) and the garbage; return the rows expected back:
    (source, offset, topic, key, value, element timestamp, record time ms). The garbage's
    timestamp is None: it is stamped with the watermark of when it was read."""
    rng = random.Random(7)
    order = list(range(EVENTS))
    for block in range(0, EVENTS, 10):
        chunk = order[block : block + 10]
        rng.shuffle(chunk)
        order[block : block + 10] = chunk
    sends: list[tuple[RawMessage, int, int | None]] = []  # message, partition, event time
    for i in order:
        content, hours = f"c{i % 97}", i * 0.01
        if i % 10:
            event: Any = request(i, content=content, hours=hours)
            partition = i % 3
        else:
            event = action(i, content=content, hours=hours)
            partition = (i // 10) % 2  # partition 2 of the actions stays empty
        sends.append((message(store, event), partition, to_micros(event.event_time)))
    for n, payload in enumerate(GARBAGE):
        sends.append((RawMessage(TOPICS[n % 2], None, payload), n % 2, None))
    sends.append((RawMessage(TOPICS[0], b"gone", b""), 1, None))  # sent as a tombstone

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    futures = []
    for raw, partition, _ in sends:
        value = raw.value if raw.key != b"gone" else None
        futures.append(
            producer.send(prefix + raw.topic, key=raw.key, value=value, partition=partition)
        )
    producer.flush(timeout=30)
    producer.close()
    rows = []
    for (raw, _, event_us), future in zip(sends, futures, strict=True):
        meta = future.get(timeout=10)
        source = f"{meta.topic}/{meta.partition}"
        rows.append((source, meta.offset, raw.topic, raw.key, raw.value, event_us, meta.timestamp))
    return rows


def _partition(source: str) -> tuple[str, int]:
    topic, partition = source.rsplit("/", 1)
    return topic, int(partition)


def _row(element: tuple[SourceRef, RawMessage], ts: Any = beam.DoFn.TimestampParam) -> Row:
    ref, m = element
    arrival_ms = -1 if m.timestamp is None else to_micros(m.timestamp) // 1_000
    return (ref.source, ref.position, m.topic, m.key, m.value, ts.micros, arrival_ms)


def _every_record_once(expected: list[Row]) -> Callable[[Iterable[Row]], None]:
    """Each expected row once; garbage (timestamp None) stamped no later than the newest
    event: at the watermark, which the events' times bound, never at its arrival (today)."""
    garbage = {(r[0], r[1]) for r in expected if r[5] is None}
    newest = max(r[5] for r in expected if r[5] is not None)

    def check(actual: Iterable[Row]) -> None:
        found = []
        for row in actual:
            if (row[0], row[1]) in garbage:
                if row[5] > newest:
                    raise BeamAssertException(f"garbage stamped after every event: {row}")
                row = (*row[:5], None, row[6])
            found.append(row)
        equal_to(expected)(found)

    return check


def _events_only(
    element: tuple[SourceRef, RawMessage], ts: Any = beam.DoFn.TimestampParam
) -> Iterator[tuple[str, int]]:
    # The garbage (no key, or the tombstone's) is stamped with the watermark, not an event
    # time: the probe is about the events.
    if element[1].key not in (None, b"gone"):
        yield ("all", ts.micros)


class _WatermarkProbe(beam.DoFn):  # type: ignore[misc]
    """("all", t) -> ("late", t, floor) for each element behind a watermark already passed
    (floor), and ("fired", t, elements seen) each time the watermark passes the newest
    element time seen so far (an event-time timer set there)."""

    FLOOR = ReadModifyWriteStateSpec("floor", VarIntCoder())
    NEWEST = ReadModifyWriteStateSpec("newest", VarIntCoder())
    SEEN = ReadModifyWriteStateSpec("seen", VarIntCoder())
    PASSED = TimerSpec("passed", TimeDomain.WATERMARK)

    def process(
        self,
        element: tuple[str, int],
        floor: Any = beam.DoFn.StateParam(FLOOR),
        newest: Any = beam.DoFn.StateParam(NEWEST),
        seen: Any = beam.DoFn.StateParam(SEEN),
        passed: Any = beam.DoFn.TimerParam(PASSED),
    ) -> Iterator[tuple[str, int, int]]:
        t = element[1]
        seen.write((seen.read() or 0) + 1)
        if floor.read() is not None and t < floor.read():
            yield ("late", t, floor.read())
        if newest.read() is None or t > newest.read():
            newest.write(t)
            passed.set(Timestamp(micros=t))

    @on_timer(PASSED)  # type: ignore[untyped-decorator]
    def on_passed(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        floor: Any = beam.DoFn.StateParam(FLOOR),
        seen: Any = beam.DoFn.StateParam(SEEN),
    ) -> Iterator[tuple[str, int, int]]:
        floor.write(ts.micros)
        yield ("fired", ts.micros, seen.read())


def _watermark_moved_and_nothing_was_late(events: int) -> Callable[[Iterable[Any]], None]:
    def check(outputs: Iterable[Any]) -> None:
        outputs = list(outputs)
        late = [o for o in outputs if o[0] == "late"]
        if late:
            raise BeamAssertException(f"{len(late)} elements behind the watermark: {late[:3]}")
        if not any(o[0] == "fired" and o[2] < events for o in outputs):
            raise BeamAssertException(f"the watermark never moved during the read: {outputs}")

    return check


def _run(prism_location: str, build: Callable[[beam.Pipeline], None]) -> float:
    """Run the pipeline on Prism; fail (not hang) past PIPELINE_BUDGET_S. Returns seconds."""
    options = PipelineOptions(
        [
            "--runner=PrismRunner",
            f"--prism_location={prism_location}",
            "--environment_type=LOOPBACK",
            "--prism_log_level=warn",
        ]
    )
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    started = time.monotonic()
    result = pipeline.run()
    state = result.wait_until_finish(duration=int(PIPELINE_BUDGET_S * 1000))
    if state != PipelineState.DONE:
        result.cancel()
        pytest.fail(f"pipeline not done after {PIPELINE_BUDGET_S} s (state {state})")
    return time.monotonic() - started


@pytest.mark.kafka
@pytest.mark.prism
def test_reads_every_record_once_and_resumes_from_offsets(
    kafka_bootstrap: str, prism_location: str, store: SchemaStore
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}."
    _create_topics(kafka_bootstrap, prefix)
    rows = _publish(kafka_bootstrap, prefix, store)
    settings = KafkaSourceSettings(
        kafka_bootstrap,
        topic_prefix=prefix,
        stop_at_end=True,
        max_out_of_orderness_s=LAG_S,
        # Small reads: many checkpoints, so the watermark has many chances to move.
        max_records_per_read=25,
        poll_timeout_ms=100,
    )

    def whole(p: beam.Pipeline) -> None:
        read = p | ReadFromKafka(settings)
        assert_that(
            read | "Rows" >> beam.Map(_row), _every_record_once(rows), label="EveryRecordOnce"
        )
        probed = (
            read
            | beam.FlatMap(_events_only).with_output_types(tuple[str, int])
            | beam.ParDo(_WatermarkProbe())
        )
        assert_that(probed, _watermark_moved_and_nothing_was_late(EVENTS), label="Watermark")

    seconds = _run(prism_location, whole)
    print(f"\nread {len(rows)} records in {seconds:.1f} s, 25 per checkpoint, Prism start included")

    # Resume as from the ledger: the second half of every partition (the empty one from 0).
    ends: dict[tuple[str, int], int] = {(prefix + TOPICS[1], 2): 0}
    for source, offset, *_ in rows:
        ends[_partition(source)] = max(ends.get(_partition(source), 0), offset + 1)
    starts = {key: end // 2 for key, end in ends.items()}
    rest = [r for r in rows if r[1] >= starts[_partition(r[0])]]
    assert 0 < len(rest) < len(rows)
    resumed = dataclasses.replace(settings, start_offsets=starts, max_records_per_read=5_000)

    def second_half(p: beam.Pipeline) -> None:
        rows_read = p | ReadFromKafka(resumed) | beam.Map(_row)
        assert_that(rows_read, _every_record_once(rest), label="OnlyTheRest")

    seconds = _run(prism_location, second_half)
    print(f"resumed: read {len(rest)} records in {seconds:.1f} s")


def test_records_intake_will_refuse_are_stamped_at_the_watermark() -> None:
    watermark, limit = Timestamp(micros=1_000), 5_000
    # An event time within the skew: its own, and it moves the watermark.
    assert element_stamp(4_000, limit, watermark) == (Timestamp(micros=4_000), True)
    assert element_stamp(5_000, limit, watermark) == (Timestamp(micros=5_000), True)
    # Beyond it (quarantined as TIMESTAMP_IN_FUTURE): the watermark, which it does not move;
    # stamped 2100 it would wait behind the landing stage's timers until 2100.
    assert element_stamp(5_001, limit, watermark) == (watermark, False)
    # Undecodable: the watermark too. Stamped with its Kafka arrival time, in a replay of
    # older events its quarantine row would wait for the watermark to reach that time
    # (tests/test_streaming_replay.py).
    assert element_stamp(None, limit, watermark) == (watermark, False)


def test_the_watermark_is_computed_only_for_records_stamped_with_it() -> None:
    def never() -> Timestamp:
        raise AssertionError("the watermark was computed for a record with a time of its own")

    limit, watermark = 5_000, Timestamp(micros=1_000)
    assert element_stamp(4_000, limit, never) == (Timestamp(micros=4_000), True)
    assert element_stamp(5_001, limit, lambda: watermark) == (watermark, False)
    assert element_stamp(None, limit, lambda: watermark) == (watermark, False)

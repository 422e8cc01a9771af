"""Beam source over Kafka (kafka-python): an unbounded read as a splittable DoFn.

In: `KafkaSourceSettings`. Out: a PCollection of (SourceRef("<topic>/<partition>", offset),
RawMessage(logical topic, key, value, Kafka record time)), one element per record, whose
element timestamp is the event time read from the payload.

Shape: Impulse -> list the partitions (one `PartitionRead` each: start offset and, with
`stop_at_end`, the end offset seen at start) -> a splittable DoFn whose restriction is the
partition's offset range. Partitions are the unit of parallelism: a range is never split
at a fraction, only checkpointed (the remainder deferred), so one consumer reads each
partition in order (manual `assign` + `seek`, no consumer group). Offsets are the
checkpoint: a restart resumes from `start_offsets` (the DuckDB batch ledger's next
offsets); the reader never commits offsets to Kafka. A bounded read's range ends one
offset past its last record, an end marker that carries the partition's last checkpoints
(its watermark at +inf once the whole read is done: `_ReadPartitionFn._at_end_marker`).

The payload is decoded here only to read its event time, so elements carry event time
from the start: re-stamping them downstream could only move them behind the watermark. A
payload that does not decode keeps the Kafka record time (intake quarantines it) and does
not move the watermark: a garbage record's send time must not outrun a replay's event
times. Watermarks: see `EventTimeWatermark`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration
from kafka import KafkaConsumer, TopicPartition

from connectors.avro_codec import decode
from connectors.avro_files import RawMessage
from connectors.errors import DecodeError, KafkaSourceError
from connectors.kafka_watermark import (
    EventTimeWatermark,
    PartitionKey,
    WatermarkState,
    element_stamp,
)
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, SUBJECTS
from pipelines.model import EPOCH, ActionEvent, RequestEvent, epoch_micros

log = logging.getLogger(__name__)
_WAIT_LOG_EVERY_S = 30.0

UNBOUNDED_STOP = 2**63 - 1  # the stop of an unbounded range (Java's Long.MAX_VALUE)
_MICROS = 1_000_000
# Open consumers per DoFn instance, one per partition: a resumed range finds its consumer
# positioned, with its prefetched records, where the previous call left it.
_MAX_CONSUMERS = 64

# Passed to kafka-python only when set, so its defaults stay in force otherwise.
_SECURITY_OPTIONS = (
    *("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"),
    *("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"),
)


@dataclass(frozen=True)
class KafkaSourceSettings:
    """Example: KafkaSourceSettings("broker:9092", topic_prefix="test-1.", stop_at_end=True).

    `topics` are logical names (intake expects them in `RawMessage.topic`); the Kafka topic
    is `topic_prefix + topic`. `start_offsets`: (Kafka topic, partition) -> next offset;
    other partitions start at their earliest offset. `stop_at_end`: read up to the end
    offsets seen at start, then finish (a bounded read, for tests and replays). Security
    settings go to kafka-python as they are; passwords are left out of repr. `schemas_dir`:
    the schema catalog the event times are read with (None: the packaged one); intake must
    use the same, or a record could be accepted that was timestamped by arrival.
    """

    bootstrap_servers: str
    topics: tuple[str, ...] = (REQUESTS_TOPIC, ACTIONS_TOPIC)
    topic_prefix: str = ""
    group_id: str | None = None  # a label only: no group is joined, nothing is committed
    client_id: str = "removal-audit-source"
    start_offsets: Mapping[PartitionKey, int] = field(default_factory=dict, hash=False)
    max_out_of_orderness_s: float = 60.0
    idle_timeout_s: float = 30.0
    max_clock_skew_s: float = 300.0  # later event times do not move the watermark
    peer_expiry_s: float = 60.0  # see EventTimeWatermark; 0 turns peer watermarks off
    poll_timeout_ms: int = 200
    max_records_per_read: int = 5_000  # per DoFn call; then checkpoint, so output is committed
    max_read_s: float = 1.0  # likewise
    idle_resume_s: float = 0.2  # delay before an idle partition is polled again
    stop_at_end: bool = False
    request_timeout_ms: int = 30_000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    schemas_dir: Path | None = None

    def __post_init__(self) -> None:
        # A private copy: the settings travel pickled to workers and must not change under them.
        object.__setattr__(self, "start_offsets", dict(self.start_offsets))
        if min(self.max_out_of_orderness_s, self.idle_timeout_s, self.peer_expiry_s) < 0:
            raise ValueError("out-of-orderness, idle timeout and peer expiry must be >= 0")
        if min(self.poll_timeout_ms, self.max_records_per_read, self.max_read_s) <= 0:
            raise ValueError("poll_timeout_ms, max_records_per_read and max_read_s must be > 0")

    def consumer_config(self) -> dict[str, Any]:
        """kafka-python KafkaConsumer keyword arguments (unset security options left out)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "group_id": self.group_id,
            "enable_auto_commit": False,
            # Only used when a seek lands outside the log: retention deleted the start.
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.poll_timeout_ms,
            "max_poll_records": min(500, self.max_records_per_read),
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
            "ssl_check_hostname": self.ssl_check_hostname,
        }
        for name in _SECURITY_OPTIONS:
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config


def source_settings(settings: Any, **overrides: Any) -> KafkaSourceSettings:
    """KafkaSourceSettings from the project's `pipelines.settings.Settings` (the one place
    Kafka options come from); `overrides` set the rest (start_offsets, stop_at_end...)."""

    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value())

    return KafkaSourceSettings(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic_prefix=settings.kafka_topic_prefix,
        max_out_of_orderness_s=settings.max_out_of_orderness_seconds,
        idle_timeout_s=settings.idle_timeout_seconds,
        max_clock_skew_s=float(settings.max_clock_skew_seconds),
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_plain_username=settings.kafka_sasl_username,
        sasl_plain_password=secret(settings.kafka_sasl_password),
        ssl_cafile=settings.kafka_ssl_cafile,
        ssl_certfile=settings.kafka_ssl_certfile,
        ssl_keyfile=settings.kafka_ssl_keyfile,
        ssl_password=secret(settings.kafka_ssl_password),
        schemas_dir=settings.schemas_dir,
        **overrides,
    )


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """One partition to read: offsets [start, stop), stop None when unbounded. `members`:
    every partition of the same read (`read_id`), for the peer watermarks."""

    read_id: str
    topic: str  # the Kafka topic (prefix included)
    logical_topic: str
    partition: int
    start: int
    stop: int | None
    members: tuple[PartitionKey, ...]


def list_partition_reads(
    consumer: KafkaConsumer, settings: KafkaSourceSettings, read_id: str
) -> list[PartitionRead]:
    """One PartitionRead per partition of every topic, from the start offsets or the earliest.

    Raises KafkaSourceError for a missing topic or a start offset past the log end (the
    ledger belongs to another incarnation of the topic). A start offset below the log start
    (deleted by retention) is moved up to it with a warning: those records are gone.
    """
    found: list[tuple[str, TopicPartition]] = []
    for topic in settings.topics:
        kafka_topic = settings.topic_prefix + topic
        ids = consumer.partitions_for_topic(kafka_topic)
        if not ids:
            raise KafkaSourceError(f"topic {kafka_topic!r} does not exist or has no partitions")
        found += [(topic, TopicPartition(kafka_topic, p)) for p in sorted(ids)]
    tps = [tp for _, tp in found]
    first = consumer.beginning_offsets(tps, timeout_ms=settings.request_timeout_ms)
    end = consumer.end_offsets(tps, timeout_ms=settings.request_timeout_ms)
    members = tuple((tp.topic, tp.partition) for tp in tps)
    reads = []
    for topic, tp in found:
        start = settings.start_offsets.get((tp.topic, tp.partition), first[tp])
        if start > end[tp]:
            raise KafkaSourceError(
                f"{tp.topic}/{tp.partition}: start offset {start} is past the log end {end[tp]}"
            )
        if start < first[tp]:
            log.warning(
                "%s/%d: offsets %d..%d were deleted unread; starting at %d",
                *(tp.topic, tp.partition, start, first[tp] - 1, first[tp]),
            )
            start = first[tp]
        stop = end[tp] if settings.stop_at_end else None
        reads.append(PartitionRead(read_id, tp.topic, topic, tp.partition, start, stop, members))
    return reads


def event_time(message: RawMessage, store: SchemaStore) -> datetime | None:
    """The event time inside `message`'s payload, or None when it does not decode."""
    subject = SUBJECTS.get(message.topic)
    if subject is None:
        return None
    try:
        record = decode(message.value, subject, store).record
        # The domain model owns the rule (withdrawn_at for WITHDRAWN, else issued_at).
        model = RequestEvent if message.topic == REQUESTS_TOPIC else ActionEvent
        moment = model.from_avro(record).event_time
    except (DecodeError, KeyError, ValueError, TypeError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _PartitionTracker(OffsetRestrictionTracker):  # type: ignore[misc]
    """Offsets of one partition, split only by checkpoints (fraction 0): one consumer reads a
    partition in order, and a fraction of an unbounded range means nothing."""

    def try_split(self, fraction_of_remainder: float) -> Any:
        return None if fraction_of_remainder > 0 else super().try_split(0)

    def is_bounded(self) -> bool:
        return bool(self.current_restriction().stop < UNBOUNDED_STOP)


class _PartitionRestrictions(RestrictionProvider):  # type: ignore[misc]
    def initial_restriction(self, element: PartitionRead) -> OffsetRange:
        # A bounded range ends one past its last record: that offset is the end marker,
        # claimed only after the read has reported its end (`_ReadPartitionFn._at_end_marker`).
        return OffsetRange(
            element.start, UNBOUNDED_STOP if element.stop is None else element.stop + 1
        )

    def create_tracker(self, restriction: OffsetRange) -> _PartitionTracker:
        return _PartitionTracker(restriction)

    def split(self, element: PartitionRead, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one restriction per partition, never split up front

    def restriction_size(self, element: PartitionRead, restriction: OffsetRange) -> float:
        # An unbounded range's backlog is unknown without asking the broker: nominal 1.
        return 1.0 if restriction.stop == UNBOUNDED_STOP else float(restriction.size())


# Beam's SDF parameter markers, declared once. The watermark parameter names no provider:
# the DoFn is its own provider (it holds the settings the estimators need).
_RESTRICTION_PARAM = beam.DoFn.RestrictionParam(_PartitionRestrictions())
_WATERMARK_PARAM = beam.DoFn.WatermarkEstimatorParam()


class _ListPartitionsFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, settings: KafkaSourceSettings, read_id: str) -> None:
        self._settings, self._read_id = settings, read_id

    def process(self, _impulse: bytes) -> Iterator[PartitionRead]:
        consumer = KafkaConsumer(**self._settings.consumer_config())
        try:
            reads = list_partition_reads(consumer, self._settings, self._read_id)
        finally:
            consumer.close()
        for read in reads:
            log.info(
                "reading %s/%d from %d to %s", read.topic, read.partition, read.start, read.stop
            )
        return iter(reads)


class _ReadPartitionFn(beam.DoFn, WatermarkEstimatorProvider):  # type: ignore[misc]
    """PartitionRead -> its records, timestamped with event time (a bounded read)."""

    def __init__(self, settings: KafkaSourceSettings) -> None:
        self._settings = settings

    def setup(self) -> None:
        self._store = SchemaStore.load(self._settings.schemas_dir)
        self._consumers: dict[TopicPartition, KafkaConsumer] = {}
        self._wait_logged: dict[tuple[str, int], float] = {}  # end marker -> last log (s)

    def teardown(self) -> None:
        while self._consumers:
            self._consumers.popitem()[1].close()

    def initial_estimator_state(self, element: PartitionRead, restriction: Any) -> WatermarkState:
        return WatermarkState(MIN_TIMESTAMP.micros, None, time.time(), element)

    def create_watermark_estimator(self, state: WatermarkState) -> EventTimeWatermark:
        s = self._settings
        lag, idle, expiry = s.max_out_of_orderness_s, s.idle_timeout_s, s.peer_expiry_s
        return EventTimeWatermark(WatermarkState(*state), lag, idle, expiry)

    def estimator_state_coder(self) -> Any:
        return PickleCoder()

    def process(
        self, element: PartitionRead, tracker: Any = _RESTRICTION_PARAM, wm: Any = _WATERMARK_PARAM
    ) -> Iterator[TimestampedValue]:
        # Not a generator itself: Beam warns about `return` in a generator `process`.
        return self._process(element, tracker, wm)

    def _process(self, element: PartitionRead, tracker: Any, wm: Any) -> Iterator[TimestampedValue]:
        restriction = tracker.current_restriction()
        if element.stop is not None and restriction.start >= element.stop:
            self._at_end_marker(element, tracker, wm)
            return
        if restriction.start >= restriction.stop:
            return  # an empty range: nothing to claim
        tp = TopicPartition(element.topic, element.partition)
        try:
            yield from self._read(element, tp, tracker, wm)
        except BaseException:
            # A consumer in an unknown state must not be reused by the retry.
            consumer = self._consumers.pop(tp, None)
            if consumer is not None:
                consumer.close()
            raise

    def _read(
        self, element: PartitionRead, tp: TopicPartition, tracker: Any, wm: Any
    ) -> Iterator[TimestampedValue]:
        s = self._settings
        consumer = self._consumer_at(tp, tracker.current_restriction().start)
        started, read = time.monotonic(), 0
        claimed: int | None = None  # the last offset claimed in this call
        while True:
            stop, position = tracker.current_restriction().stop, consumer.position(tp)
            if element.stop is not None and position >= element.stop and stop > element.stop:
                self._end_of_data(element, tp, tracker, wm, claimed)
                return
            if position >= stop:
                # Read up to the stop (its last offsets may hold no record: transaction
                # markers, compaction): a failed claim of the stop ends the range.
                tracker.try_claim(stop)
                return
            records = consumer.poll(timeout_ms=s.poll_timeout_ms).get(tp, [])
            elapsed = time.monotonic() - started
            if not records:
                highwater = consumer.highwater(tp)
                caught_up = highwater is not None and position >= highwater
                if not caught_up and elapsed < s.max_read_s:
                    continue  # a backlog, or no fetch answered yet: not idle
                wm.note_caught_up(caught_up)
                tracker.defer_remainder(Duration(seconds=s.idle_resume_s if caught_up else 0))
                return
            if records[0].offset < position:
                # auto_offset_reset moved back: the log was truncated or the topic recreated.
                raise KafkaSourceError(
                    f"{tp.topic}/{tp.partition}: expected offset {position}, "
                    f"got {records[0].offset}; the log no longer holds what was read"
                )
            for record in records:
                if (
                    element.stop is not None
                    and record.offset >= element.stop
                    and element.stop < stop
                ):
                    # Published after the read began: not this read's.
                    self._end_of_data(element, tp, tracker, wm, claimed)
                    return
                if not tracker.try_claim(record.offset):
                    return  # past a checkpoint's stop, or the remainder was split off
                claimed = record.offset
                yield self._element(element, record, wm)
            read += len(records)
            if read >= s.max_records_per_read or time.monotonic() - started >= s.max_read_s:
                wm.note_caught_up(False)
                tracker.defer_remainder()
                return

    def _end_of_data(
        self, element: PartitionRead, tp: TopicPartition, tracker: Any, wm: Any, claimed: int | None
    ) -> None:
        """Every record of a bounded read's partition is out: claim up to the end marker and
        leave the marker to a checkpoint. The partition counts as finished from the marker's
        call on, once this call's records are in the runner's hands."""
        assert element.stop is not None
        last = element.stop - 1
        unclaimed = tracker.current_restriction().start if claimed is None else claimed + 1
        # Offsets with no record (transaction markers, compaction) are claimed too, or the
        # checkpoint below would leave them in the remainder, to be read again.
        if unclaimed <= last and not tracker.try_claim(last):
            return  # the remainder was split off
        self._consumers.pop(tp).close()  # this call's consumer: nothing left to read
        tracker.defer_remainder()

    def _at_end_marker(self, element: PartitionRead, tracker: Any, wm: Any) -> None:
        """The end marker of a bounded read (the offset after its last record, which no
        record fills): checkpoint until every partition of the read is done, then once more
        with the watermark at +inf, then finish.

        Why: Prism keeps one output watermark estimate per SDF stage, the last finished
        bundle's, and a refresh that finds the stage's input done can still take that
        estimate over +inf (prism v2.77.0, `stageState.updateWatermarks`): the read's
        watermark then stays at the estimate for good, with rows held downstream behind it
        (seen in a 1M replay: Prism failed the job as stuck). The last checkpoint of every
        partition reporting +inf leaves no estimate below it to stay at. The checkpoints
        come after the data's own bundle is done, so no record is ever behind a watermark
        its partition has already let through.
        """
        wm.finish()
        if wm.end_reported():
            tracker.try_claim(element.stop)
        elif wm.read_finished():
            wm.end()
            tracker.defer_remainder()
        else:
            self._log_wait(element, wm)
            tracker.defer_remainder(Duration(seconds=self._settings.idle_resume_s))

    def _log_wait(self, element: PartitionRead, wm: Any) -> None:
        # What a finished partition waits for, every 30 s; a warning once a peer has been
        # silent for `peer_expiry_s`: the runner leaves it unscheduled, or another worker
        # reads it (then only its end there lets this read end).
        key, now = (element.topic, element.partition), time.monotonic()
        if now - self._wait_logged.get(key, -_WAIT_LOG_EVERY_S) < _WAIT_LOG_EVERY_S:
            return
        self._wait_logged[key] = now
        peers = wm.unfinished_peers()
        silent = max((s for _, s in peers), default=0.0) >= self._settings.peer_expiry_s
        waiting = ", ".join(f"{t}/{p} (silent {s:.0f} s)" for (t, p), s in peers)
        log.log(
            logging.WARNING if silent else logging.INFO,
            "%s/%d is read to its end; the read waits for %s",
            element.topic,
            element.partition,
            waiting or "partitions read elsewhere",
        )

    def _element(self, element: PartitionRead, record: Any, wm: Any) -> TimestampedValue:
        # Kafka's record time (ms; -1 for none) is kept as the arrival time.
        arrival_us = record.timestamp * 1_000 if record.timestamp >= 0 else None
        arrival = None if arrival_us is None else EPOCH + timedelta(microseconds=arrival_us)
        # A tombstone (null value) becomes an empty payload, which intake quarantines.
        value = record.value if record.value is not None else b""
        message = RawMessage(element.logical_topic, record.key, value, arrival)
        origin = SourceRef(f"{element.topic}/{element.partition}", record.offset)
        moment = event_time(message, self._store)
        event_us = None if moment is None else epoch_micros(moment)
        limit_us = int((time.time() + self._settings.max_clock_skew_s) * _MICROS)
        stamp, observed = element_stamp(event_us, limit_us, wm.current_watermark)
        if observed:
            wm.observe_event(stamp.micros)
        return TimestampedValue((origin, message), stamp)

    def _consumer_at(self, tp: TopicPartition, offset: int) -> KafkaConsumer:
        """This partition's consumer, positioned at `offset` (kept open between calls)."""
        consumer = self._consumers.pop(tp, None)
        if consumer is None:
            consumer = KafkaConsumer(**self._settings.consumer_config())
            consumer.assign([tp])
            consumer.seek(tp, offset)
        elif consumer.position(tp) != offset:
            consumer.seek(tp, offset)
        self._consumers[tp] = consumer  # re-inserted: dict order is least recently used first
        while len(self._consumers) > _MAX_CONSUMERS:
            self._consumers.pop(next(iter(self._consumers))).close()
        return consumer


class _ReadUnboundedPartitionFn(_ReadPartitionFn):
    """The same read declared unbounded per element, so its output PCollection is unbounded
    (a `stop_at_end` read keeps a bounded one, which groups without windowing)."""

    @beam.DoFn.unbounded_per_element()  # type: ignore[untyped-decorator]
    def process(
        self, element: PartitionRead, tracker: Any = _RESTRICTION_PARAM, wm: Any = _WATERMARK_PARAM
    ) -> Iterator[TimestampedValue]:
        return self._process(element, tracker, wm)


class ReadFromKafka(beam.PTransform):  # type: ignore[misc]
    """PBegin -> (SourceRef("<topic>/<partition>", offset), RawMessage), timestamped with
    event time; unbounded unless `settings.stop_at_end`."""

    def __init__(self, settings: KafkaSourceSettings) -> None:
        super().__init__()
        self._settings = settings
        self._read_id = uuid4().hex  # keeps this read's peer watermarks apart from others'

    def expand(self, pbegin: Any) -> Any:
        reader = _ReadPartitionFn if self._settings.stop_at_end else _ReadUnboundedPartitionFn
        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "ListPartitions" >> beam.ParDo(_ListPartitionsFn(self._settings, self._read_id))
            | "ReadPartitions"
            >> beam.ParDo(reader(self._settings)).with_output_types(tuple[SourceRef, RawMessage])
        )

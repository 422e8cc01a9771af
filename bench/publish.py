"""Publish a benchmark workload to Kafka fast, or paced, and record where each message went.

`removal-audit publish` (connectors.kafka_publish) replays faithfully through kafka-python's
KafkaProducer (acks=all, idempotent): about 4,000 messages/s here, and the producer's
per-message Python path caps even a tuned one (acks=1, 1 MiB batches, 50 ms linger) near
10,000/s. `publish_messages` therefore builds the record batches itself (RecordBatch v2,
no compression, CreateTime) and sends them as Produce requests (acks=1) through
kafka-python's network client, up to five in flight per broker. Partitions are Kafka's
default for keyed records (murmur2 of the key, positive, modulo the partition count,
`kafka_partitions`), so a key lands where any Kafka producer would put it. The records keep
the files' key and value bytes; their timestamp is the send time (as with `removal-audit
publish`: the arrival times in the files are history).

`PublishResult.sends` holds, per (topic, partition), every message's offset and send time,
from the broker's base offset of each batch. With `rate` (messages/s) the sends are paced
on the wall clock and a batch waits at most `linger_ms`; without, they go as fast as the
broker takes them. A batch the broker refuses raises PublishError (no retries: a benchmark
broker that refuses is a failed run). Topics missing on the broker are created with
`connectors.kafka_publish.ensure_topics` (the partition count of `removal-audit publish`).
"""

from __future__ import annotations

import struct
import time
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
from kafka.net.compat import KafkaNetClient
from kafka.protocol.producer import ProduceRequest
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from bench.encoding import length_prefix, zigzag_varint
from connectors.kafka_publish import PublishError, PublishSettings, ensure_topics
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC

if TYPE_CHECKING:
    from bench.workload import Workload

BATCH_BYTES = 512 * 1024  # under the broker's default max.message.bytes (1 MiB)
MAX_RECORDS = 32_768
MAX_IN_FLIGHT = 5
_CHUNK = 4_096
# RecordBatch v2 (Kafka protocol): the fields after the CRC, then the ones before it.
_AFTER_CRC = struct.Struct(">hiqqqhii")
_BEFORE_CRC = struct.Struct(">qiibI")
_NO_PRODUCER, _NO_EPOCH, _NO_SEQUENCE = -1, -1, -1
_MAGIC = 2
_MURMUR_SEED, _MURMUR_M = 0x9747B28C, 0x5BD1E995


@dataclass(frozen=True)
class PublishResult:
    """What was sent: `messages` in `seconds` (all acknowledged), per topic, and for each
    (topic, partition) the pairs (offset, send time in epoch ms) flattened into one array
    (`sends[tp][2 i]` is an offset, `sends[tp][2 i + 1]` its send time)."""

    messages: int
    seconds: float
    per_topic: dict[str, int]
    sends: dict[tuple[str, int], array[int]] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def send_times(self) -> dict[tuple[str, int], dict[int, int]]:
        """(topic, partition) -> {offset: send time ms}."""
        return {tp: dict(zip(v[0::2], v[1::2], strict=True)) for tp, v in self.sends.items()}


def publish_workload(
    workload: Workload,
    bootstrap: str,
    prefix: str,
    *,
    rate: float | None = None,
    limit: int | None = None,
    timeout_s: float = 120.0,
) -> PublishResult:
    """Send the workload's messages in arrival order (up to `limit`) to `prefix` + topic."""
    return publish_messages(
        workload.raw_messages(), bootstrap, prefix, rate=rate, limit=limit, timeout_s=timeout_s
    )


def publish_messages(
    messages: Iterable[tuple[str, bytes | None, bytes, int]],
    bootstrap: str,
    prefix: str,
    *,
    rate: float | None = None,
    limit: int | None = None,
    linger_ms: float = 5.0,
    timeout_s: float = 120.0,
) -> PublishResult:
    """Send (topic, key, value, _) messages to `prefix` + topic; see the module docstring."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    topics = [prefix + t for t in (REQUESTS_TOPIC, ACTIONS_TOPIC)]
    settings = PublishSettings(
        bootstrap_servers=bootstrap, topic_prefix=prefix, timeout_s=timeout_s
    )
    ensure_topics(settings, topics)
    sender = _Sender(bootstrap, topics, timeout_s)
    per_topic: Counter[str] = Counter()
    pending: dict[tuple[str, int], _Batch] = {}
    sent = 0
    started = time.perf_counter()
    source = iter(messages) if limit is None else islice(messages, limit)
    try:
        for chunk in _chunks(source, _CHUNK):
            partitions = kafka_partitions([m[1] for m in chunk], sender.partitions)
            for (topic, key, value, _), partition in zip(chunk, partitions.tolist(), strict=True):
                if rate is not None:
                    wait = started + sent / rate - time.perf_counter()
                    if wait > 0:
                        sender.idle(wait)
                    _flush_lingering(pending, sender, linger_ms)
                tp = (prefix + topic, partition)
                batch = pending.get(tp)
                if batch is None:
                    batch = pending[tp] = _Batch()
                batch.add(key, value, int(time.time() * 1000))
                if batch.size >= BATCH_BYTES or len(batch.timestamps) >= MAX_RECORDS:
                    sender.send(tp, pending.pop(tp))
                per_topic[tp[0]] += 1
                sent += 1
        for tp in list(pending):
            sender.send(tp, pending.pop(tp))
        sender.drain()
    finally:
        sender.close()
    return PublishResult(sent, time.perf_counter() - started, dict(per_topic), sender.sends)


def kafka_partitions(keys: Sequence[bytes | None], partitions: int) -> np.ndarray:
    """Kafka's default partition of each key: murmur2 (Java client's), positive, modulo
    `partitions`. Vectorised over keys of equal length. A null key goes to partition 0
    (the workload has none)."""
    result = np.zeros(len(keys), dtype=np.int64)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            by_length.setdefault(len(key), []).append(i)
    for length, rows in by_length.items():
        data = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8)  # type: ignore[misc]
        result[rows] = (_murmur2(data.reshape(len(rows), length)) & 0x7FFFFFFF) % partitions
    return result


def _murmur2(data: np.ndarray) -> np.ndarray:
    """murmur2 of each row of a (keys, length) uint8 array, as unsigned 32-bit values."""
    m = np.uint32(_MURMUR_M)
    length = data.shape[1]
    with np.errstate(over="ignore"):
        h = np.full(data.shape[0], _MURMUR_SEED ^ length, dtype=np.uint32)
        words = data[:, : length - length % 4].astype(np.uint32)
        for i in range(0, length - length % 4, 4):
            k = words[:, i] | words[:, i + 1] << 8 | words[:, i + 2] << 16 | words[:, i + 3] << 24
            k *= m
            k ^= k >> np.uint32(24)
            k *= m
            h *= m
            h ^= k
        tail = length % 4
        if tail:
            rest = data[:, length - tail :].astype(np.uint32)
            for j in range(tail - 1, -1, -1):
                h ^= rest[:, j] << np.uint32(8 * j)
            h *= m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
    return h.astype(np.int64)


class _Batch:
    """Records of one (topic, partition) waiting to be sent."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.timestamps = array("q")
        self.size = 0
        self.opened = time.perf_counter()

    def add(self, key: bytes | None, value: bytes, timestamp: int) -> None:
        delta = timestamp - self.timestamps[0] if self.timestamps else 0
        body = b"".join(
            (
                b"\x00",  # attributes
                # Zigzag varints, like every length here; the wall clock may step back.
                length_prefix(delta) if delta >= 0 else zigzag_varint(delta),
                length_prefix(len(self.timestamps)),  # offset delta
                b"\x01" if key is None else length_prefix(len(key)) + key,  # -1: null key
                length_prefix(len(value)),
                value,
                b"\x00",  # no headers
            )
        )
        self.records.append(length_prefix(len(body)) + body)
        self.timestamps.append(timestamp)
        self.size += len(body) + 3

    def encode(self) -> bytes:
        """The RecordBatch (magic 2, no compression, CreateTime, no producer id)."""
        count = len(self.timestamps)
        tail = _AFTER_CRC.pack(
            0,  # attributes
            count - 1,  # last offset delta
            self.timestamps[0],
            max(self.timestamps),
            _NO_PRODUCER,
            _NO_EPOCH,
            _NO_SEQUENCE,
            count,
        ) + b"".join(self.records)
        crc = calc_crc32c(tail)
        # batchLength counts from partitionLeaderEpoch: epoch (4), magic (1), crc (4), tail.
        return _BEFORE_CRC.pack(0, 9 + len(tail), -1, _MAGIC, crc) + tail


class _Sender:
    """Produce requests to the partition leaders, a few in flight; offsets as they complete."""

    def __init__(self, bootstrap: str, topics: Sequence[str], timeout_s: float) -> None:
        self._timeout_ms = int(timeout_s * 1000)
        self._client = KafkaNetClient(bootstrap_servers=bootstrap, client_id="bench-publish")
        self._client.check_version(timeout_ms=self._timeout_ms)
        cluster = self._client.cluster
        for topic in topics:
            cluster.add_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not all(cluster.partitions_for_topic(t) for t in topics):
            if time.monotonic() > deadline:
                raise PublishError(f"no metadata for {topics} after {timeout_s} s")
            self._client.poll(future=cluster.request_update(), timeout_ms=1000)
        counts = {len(cluster.partitions_for_topic(t)) for t in topics}
        if len(counts) != 1:
            raise PublishError(f"topics {topics} have different partition counts {counts}")
        self.partitions = counts.pop()
        self._leaders = {
            (t, p): cluster.leader_for_partition(TopicPartition(t, p))
            for t in topics
            for p in cluster.partitions_for_topic(t)
        }
        self._in_flight: deque[tuple[Any, tuple[str, int], array[int]]] = deque()
        self.sends: dict[tuple[str, int], array[int]] = {}

    def send(self, tp: tuple[str, int], batch: _Batch) -> None:
        node = self._leaders[tp]
        # ready() also starts connecting to a node not yet connected.
        while self._client.in_flight_request_count(node) >= MAX_IN_FLIGHT or not (
            self._client.ready(node)
        ):
            self._client.poll(timeout_ms=100)
            self._collect()
        topic = ProduceRequest.TopicProduceData
        request = ProduceRequest(
            transactional_id=None,
            acks=1,
            timeout_ms=self._timeout_ms,
            topic_data=[
                topic(
                    name=tp[0],
                    partition_data=[
                        topic.PartitionProduceData(index=tp[1], records=batch.encode())
                    ],
                )
            ],
            min_version=3,  # RecordBatch v2
            max_version=9,  # what kafka-python's own producer sends
        )
        self._in_flight.append((self._client.send(node, request), tp, batch.timestamps))
        self._client.poll(timeout_ms=0)
        self._collect()

    def idle(self, seconds: float) -> None:
        """Wait `seconds`, serving the network meanwhile."""
        self._client.poll(timeout_ms=max(0, int(seconds * 1000)))
        self._collect()

    def drain(self) -> None:
        deadline = time.monotonic() + self._timeout_ms / 1000
        while self._in_flight:
            if time.monotonic() > deadline:
                raise PublishError(f"{len(self._in_flight)} batches unacknowledged at the deadline")
            self._client.poll(future=self._in_flight[0][0], timeout_ms=1000)
            self._collect()

    def _collect(self) -> None:
        while self._in_flight and self._in_flight[0][0].is_done:
            future, tp, timestamps = self._in_flight.popleft()
            if future.failed():
                raise PublishError(f"batch for {tp} failed: {future.exception!r}")
            response = future.value
            for topic in response.responses:
                for partition in topic.partition_responses:
                    if partition.error_code:
                        raise PublishError(f"batch for {tp} refused, error {partition.error_code}")
                    pairs = self.sends.setdefault(tp, array("q"))
                    for i, timestamp in enumerate(timestamps):
                        pairs.append(partition.base_offset + i)
                        pairs.append(timestamp)

    def close(self) -> None:
        self._client.close()


def _flush_lingering(
    pending: dict[tuple[str, int], _Batch], sender: _Sender, linger_ms: float
) -> None:
    now = time.perf_counter()
    for tp in [tp for tp, b in pending.items() if (now - b.opened) * 1000 >= linger_ms]:
        sender.send(tp, pending.pop(tp))


def _chunks(
    source: Iterator[tuple[str, bytes | None, bytes, int]], size: int
) -> Iterator[list[tuple[str, bytes | None, bytes, int]]]:
    while chunk := list(islice(source, size)):
        yield chunk

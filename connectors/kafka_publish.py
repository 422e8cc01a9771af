"""Replay raw-message Avro files into Kafka topics (`removal-audit publish`).

Messages keep their key and value bytes (single-object encoded events), so what lands on
the topics is byte for byte what the files hold. They are sent in arrival order (the
files' `timestamp`), either as fast as the broker takes them or time-compressed: arrival
time scaled onto wall time by `speedup`. The Kafka record timestamp is the send time, not
the original arrival time: a 2017 timestamp would put the segment past any time-based
retention at once. Event time travels inside the payload.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from connectors.avro_files import RawMessage, read_raw_messages
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC


@dataclass(frozen=True)
class PublishSettings:
    """Example: PublishSettings(bootstrap_servers="127.0.0.1:9092", speedup=1e7)."""

    bootstrap_servers: str
    speedup: float | None = None  # None: as fast as possible
    topic_prefix: str = ""  # e.g. "test-1." to keep runs apart on a shared broker
    partitions: int = 3  # for topics this creates
    timeout_s: float = 60.0


def _arrival_order(files: Sequence[Path], store: SchemaStore) -> Iterator[RawMessage]:
    """All files' messages merged by arrival timestamp (stable within a file)."""

    def keyed(index: int, path: Path) -> Iterator[tuple[float, int, int, RawMessage]]:
        last = 0.0
        for position, message in read_raw_messages(path, store):
            if message.timestamp is not None:
                last = message.timestamp.timestamp()
            yield last, index, position, message

    for *_, message in heapq.merge(*(keyed(i, p) for i, p in enumerate(files))):
        yield message


def ensure_topics(settings: PublishSettings, topics: Sequence[str]) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=int(settings.timeout_s * 1000),
    )
    try:
        missing = set(topics) - set(admin.list_topics())
        if missing:
            # Created meanwhile by another publisher: what we wanted.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(t, settings.partitions, 1) for t in sorted(missing)])
    finally:
        admin.close()


def publish(files: Sequence[Path], settings: PublishSettings, store: SchemaStore) -> Counter[str]:
    """Send every message of `files`; return how many went to each topic (all acknowledged)."""
    topics = [settings.topic_prefix + t for t in (REQUESTS_TOPIC, ACTIONS_TOPIC)]
    ensure_topics(settings, topics)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
    )
    sent: Counter[str] = Counter()
    failures: list[BaseException] = []
    started = time.monotonic()
    first: datetime | None = None
    try:
        for message in _arrival_order(files, store):
            if settings.speedup and message.timestamp is not None:
                first = first or message.timestamp
                due = (message.timestamp - first).total_seconds() / settings.speedup
                delay = started + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            topic = settings.topic_prefix + message.topic
            future = producer.send(topic, key=message.key, value=message.value)
            future.add_errback(failures.append)
            sent[topic] += 1
        producer.flush(timeout=settings.timeout_s)
    finally:
        producer.close(timeout=settings.timeout_s)
    if failures:
        raise PublishError(
            f"{len(failures)} of {sum(sent.values())} messages were not acknowledged; "
            f"first: {failures[0]!r}"
        )
    return sent


class PublishError(RuntimeError):
    """The broker did not acknowledge every message."""

"""Producing raw records to Kafka and waiting for every outcome, for the quarantine topic
and for replays: what to send (`Outgoing`), where it was written or why not (`Written`),
and the topic limits that decide whether a record fits."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigFilterType, ConfigResource, ConfigResourceType
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.record.default_records import DefaultRecordBatchBuilder

MAX_MESSAGE_BYTES = "max.message.bytes"  # the topic config that bounds a record batch
# kafka-python's max_request_size default: the producer's size when no limit is known.
DEFAULT_REQUEST_BYTES = 1_048_576

# kafka-python connection options shared by producers and admin clients (consumer_config()
# of the streaming source holds the same names).
CONNECTION_OPTIONS = (
    *("security_protocol", "ssl_check_hostname", "sasl_mechanism"),
    *("sasl_plain_username", "sasl_plain_password"),
    *("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"),
)
# Refusals that a retry cannot change: the record is larger than the limits allow.
PERMANENT_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce: `quarantine_id` names the row it comes from."""

    quarantine_id: str
    topic: str  # the Kafka topic, prefix included
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Written:
    """Where the broker acknowledged a record, or why it refused it (`error`)."""

    quarantine_id: str
    topic: str
    partition: int | None
    offset: int | None
    error: BaseException | None = None

    @property
    def position(self) -> str:
        """ "topic/partition#offset", the project's source_ref form."""
        return f"{self.topic}/{self.partition}#{self.offset}"


def record_bytes(record: Outgoing) -> int:
    """The size the broker compares with max.message.bytes, at most: `record` alone in a
    batch (kafka-python's estimate, the one its producer checks max_request_size against)."""
    return int(
        DefaultRecordBatchBuilder.estimate_size_in_bytes(
            record.key, record.value, list(record.headers)
        )
    )


def max_message_bytes(admin: KafkaAdminClient, topics: Sequence[str]) -> dict[str, int]:
    """max.message.bytes of each of `topics` (the topic's own setting, else the broker's
    default), e.g. {"demo.removal.requests": 1048588}. Topics the broker does not describe
    (missing, or no DescribeConfigs permission) are left out."""
    if not topics:
        return {}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, [MAX_MESSAGE_BYTES]) for t in topics],
        config_filter=ConfigFilterType.ALL,  # the default ("modified") hides broker defaults
    )
    return {
        topic: int(configs[MAX_MESSAGE_BYTES]["value"])
        for topic, configs in described.get("topic", {}).items()
        if MAX_MESSAGE_BYTES in configs
    }


def missing_topics(admin_config: Mapping[str, Any], topics: Sequence[str]) -> list[str]:
    """Those of `topics` the broker does not have."""
    admin = KafkaAdminClient(**admin_config)
    try:
        return sorted(set(topics) - set(admin.list_topics()))
    finally:
        admin.close()


def produce(
    producer: KafkaProducer, records: Sequence[Outgoing], timeout_s: float
) -> list[Written]:
    """Send `records` and wait for every outcome: one `Written` each, in order, with the
    partition and offset the broker acknowledged, or the error."""
    futures: list[tuple[Outgoing, Any]] = []
    for record in records:
        try:
            future: Any = producer.send(
                record.topic, key=record.key, value=record.value, headers=list(record.headers)
            )
        except KafkaError as refused:  # e.g. larger than max_request_size, raised at once
            future = refused
        futures.append((record, future))
    # On a timeout, the futures still pending are reported as not acknowledged below.
    with contextlib.suppress(KafkaTimeoutError):
        producer.flush(timeout=timeout_s)
    written = []
    for record, future in futures:
        error: BaseException | None
        if isinstance(future, BaseException):
            error = future
        elif not future.is_done:
            error = KafkaTimeoutError(f"not acknowledged within {timeout_s:g} s")
        elif future.failed():
            error = future.exception
        else:
            meta = future.value
            written.append(Written(record.quarantine_id, meta.topic, meta.partition, meta.offset))
            continue
        written.append(Written(record.quarantine_id, record.topic, None, None, error))
    return written

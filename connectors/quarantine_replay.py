"""Replays of quarantined records to their source topics (`removal-audit quarantine
replay`): key and value unchanged, one header `removal-audit.replay-of` = the quarantine_id,
no topic created (a missing source topic means the wrong broker or prefix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError

from connectors.kafka_produce import Outgoing, Written, missing_topics, produce
from connectors.quarantine_topic import (
    HEADER_REPLAY_OF,
    QuarantineTopicError,
    QuarantineTopicSettings,
)


class Replay(NamedTuple):
    """A quarantined record going back to `topic` (the Kafka topic, prefix included)."""

    quarantine_id: str
    topic: str
    key: bytes | None
    value: bytes


def produce_replays(settings: QuarantineTopicSettings, records: Sequence[Replay]) -> list[Written]:
    """Produce `records`, key and value unchanged, each with the header
    removal-audit.replay-of = its quarantine_id; return where each was written.

    Creates no topic: raises QuarantineTopicError before producing anything when a topic is
    missing, and after producing when any record was not acknowledged (the error lists the
    ones that were, so that the operator knows what went out)."""
    outgoing = [
        Outgoing(qid, topic, key, value, ((HEADER_REPLAY_OF, qid.encode()),))
        for qid, topic, key, value in records
    ]
    if not outgoing:
        return []
    try:
        missing = missing_topics(settings.admin_config(), sorted({o.topic for o in outgoing}))
        if not missing:
            producer = KafkaProducer(**settings.producer_config())
    except KafkaError as error:
        raise QuarantineTopicError(
            f"cannot reach {settings.bootstrap_servers}: {error!r}; nothing was produced"
        ) from error
    if missing:
        raise QuarantineTopicError(
            f"no such topic: {', '.join(missing)} (a replay creates none: check "
            "--bootstrap-servers and --topic-prefix); nothing was produced"
        )
    try:
        written = produce(producer, outgoing, settings.timeout_s)
    finally:
        producer.close(timeout=settings.timeout_s)
    failed = [w for w in written if w.error is not None]
    if failed:
        done = ", ".join(f"{w.quarantine_id} -> {w.position}" for w in written if w.error is None)
        raise QuarantineTopicError(
            f"{len(failed)} of {len(written)} replayed records were not acknowledged; first: "
            f"{failed[0].quarantine_id}: {failed[0].error!r}; acknowledged: {done or 'none'}"
        )
    return written

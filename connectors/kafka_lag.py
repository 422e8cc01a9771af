"""Kafka: how far the streaming job is behind the end of its input partitions.

The job's position is the DuckDB batch ledger (`StreamSink.resume_offsets`: the next offset
it would read per partition), not a consumer group, so the lag is measured against that:
end offset minus next offset, per partition. No group is joined and nothing is committed.

Example:
    consumer_lag(source.consumer_config(), {("removal.requests", 0): 1200})
    # -> {("removal.requests", 0): 35}   (the partition's end offset is 1235)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError


class ConsumerLagError(RuntimeError):
    """The end offsets could not be read (broker unreachable, unknown partition, timeout)."""


# A metrics refresh must not stall for kafka-python's 30 s defaults when the broker is down.
DEFAULT_TIMEOUT_S = 5.0


def lag_consumer(
    consumer_config: Mapping[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> KafkaConsumer:
    """A consumer for `consumer_lag` to reuse across calls: no group, no commits.

    Raises ConsumerLagError when no broker answers within `timeout_s`."""
    config = {
        **consumer_config,
        "group_id": None,
        "enable_auto_commit": False,
        "bootstrap_timeout_ms": int(timeout_s * 1000),
    }
    try:
        return KafkaConsumer(**config)
    except KafkaError as error:
        servers = config.get("bootstrap_servers")
        raise ConsumerLagError(f"cannot reach Kafka at {servers}: {error!r}") from error


def consumer_lag(
    consumer_config: Mapping[str, Any],
    next_offsets: Mapping[tuple[str, int], int],
    *,
    consumer: KafkaConsumer | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[tuple[str, int], int]:
    """(Kafka topic, partition) -> end offset minus `next_offsets`' next offset to read.

    `consumer_config`: kafka-python KafkaConsumer keyword arguments (KafkaSourceSettings.
    consumer_config()); a short-lived consumer is made from it and closed, unless a reusable
    `consumer` (from `lag_consumer`) is given, which is left open. A partition whose log was
    truncated or recreated below the next offset shows a negative lag, as it is.
    Raises ConsumerLagError when the broker cannot be reached or does not answer within
    `timeout_s` (for connecting, then again for the offsets).
    """
    if not next_offsets:
        return {}
    own = consumer is None
    client = lag_consumer(consumer_config, timeout_s=timeout_s) if consumer is None else consumer
    partitions = [TopicPartition(topic, partition) for topic, partition in next_offsets]
    try:
        ends = client.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
    except KafkaError as error:
        raise ConsumerLagError(
            f"reading the end offsets of {len(partitions)} partition(s) failed: {error!r}"
        ) from error
    finally:
        if own:
            client.close()
    return {
        (tp.topic, tp.partition): int(end) - next_offsets[(tp.topic, tp.partition)]
        for tp, end in ends.items()
    }

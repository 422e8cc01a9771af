"""Commit landed offsets to a Kafka consumer group, for the tools on-call already use.

The streaming job's checkpoint is the DuckDB batch ledger (`StreamSink.resume_offsets`):
a restart reads from there, never from Kafka's committed offsets. Committing the same
positions to a consumer group, only after the records below them are landed, lets
`kafka-consumer-groups.sh --describe --group removal-audit` and lag exporters show how far
behind the audit is. Best effort: a failed commit is logged and retried with the next one.

Example:
    commit = KafkaOffsetCommitter(source.consumer_config(), "removal-audit")
    commit({("removal.requests", 0): 1200})   # the next offset to read, per partition
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)


class KafkaOffsetCommitter:
    def __init__(self, consumer_config: Mapping[str, Any], group_id: str) -> None:
        self._config = {**consumer_config, "group_id": group_id, "enable_auto_commit": False}
        self._consumer: KafkaConsumer | None = None
        self._committed: dict[tuple[str, int], int] = {}

    def __call__(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        changed = {k: v for k, v in next_offsets.items() if self._committed.get(k) != v}
        if not changed:
            return
        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(**self._config)
            self._consumer.commit(
                {
                    TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                    for (topic, partition), offset in changed.items()
                }
            )
            self._committed.update(changed)
        except Exception as error:  # monitoring only: never stop landing for it
            log.warning("committing landed offsets to the consumer group failed: %s", error)
            self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __getstate__(self) -> dict[str, Any]:
        # Travels pickled to the workers: without its connection.
        return {**self.__dict__, "_consumer": None}

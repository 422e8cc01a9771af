"""The real Kafka test broker round-trips keyed messages in order, through a consumer group.

Needs the ``kafka_bootstrap`` fixture of tests/kafka_broker_fixture.py (registered in
conftest.py, or ``-p tests.kafka_broker_fixture``). Every wait is bounded by one budget, so
the test cannot hang: it fails within BUDGET_S seconds once the broker is up.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.kafka

MESSAGES = 1_000
PARTITIONS = 3
KEYS = 37
BUDGET_S = 25.0


class Budget:
    """What is left of one wall-clock budget, for every timeout in the test."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left_s(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the Kafka round trip took longer than {BUDGET_S:.0f} s")
        return left

    def left_ms(self, cap_s: float = BUDGET_S) -> int:
        return max(1, int(min(self.left_s(), cap_s) * 1000))


def test_keyed_messages_round_trip_in_partition_order(kafka_bootstrap: str) -> None:
    budget = Budget(BUDGET_S)
    topic = f"test.broker-roundtrip.{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_bootstrap,
        client_id="test-admin",
        request_timeout_ms=budget.left_ms(10),
        bootstrap_timeout_ms=budget.left_ms(10),
    )
    try:
        admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            timeout_ms=budget.left_ms(10),
        )
        admin.wait_for_topics([topic], timeout_ms=budget.left_ms(10))
        assert topic in admin.list_topics()

        # Produce: idempotent, acks=all, so the broker keeps each partition in send order.
        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            client_id="test-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_block_ms=budget.left_ms(10),
            request_timeout_ms=budget.left_ms(10),
            bootstrap_timeout_ms=budget.left_ms(10),
        )
        try:
            futures = [
                producer.send(topic, key=f"key-{i % KEYS}".encode(), value=f"{i}".encode())
                for i in range(MESSAGES)
            ]
            producer.flush(timeout=budget.left_s())
            sent = [future.get(timeout=budget.left_s()) for future in futures]
        finally:
            producer.close(timeout=5)

        sent_by_partition: dict[int, list[int]] = defaultdict(list)
        partition_of_key: dict[str, int] = {}
        for i, metadata in enumerate(sent):
            sent_by_partition[metadata.partition].append(i)
            key = f"key-{i % KEYS}"
            assert partition_of_key.setdefault(key, metadata.partition) == metadata.partition
            assert metadata.offset == len(sent_by_partition[metadata.partition]) - 1
        assert len(sent_by_partition) > 1, "keys should spread over several partitions"

        # Consume everything back through a consumer group (exercises the group coordinator
        # and __consumer_offsets on the single broker).
        group = f"test-group-{uuid.uuid4().hex[:12]}"
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            client_id="test-consumer",
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            request_timeout_ms=10_000,
            bootstrap_timeout_ms=budget.left_ms(10),
        )
        received: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
        try:
            consumer.subscribe([topic])
            count = 0
            while count < MESSAGES:
                batches = consumer.poll(timeout_ms=min(1_000, budget.left_ms()))
                for tp, records in batches.items():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        received[tp.partition].append(
                            (record.offset, record.key.decode(), int(record.value))
                        )
                        count += 1
            consumer.commit(timeout_ms=budget.left_ms(10))
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = consumer.end_offsets(partitions, timeout_ms=budget.left_ms(10))
            committed = {
                tp.partition: consumer.committed(tp, timeout_ms=budget.left_ms(10))
                for tp in partitions
            }
        finally:
            consumer.close(autocommit=False, timeout_ms=5_000)

        assert sum(len(records) for records in received.values()) == MESSAGES
        for partition, records in received.items():
            assert [offset for offset, _, _ in records] == list(range(len(records)))
            assert [value for _, _, value in records] == sent_by_partition[partition]
            for _, key, value in records:
                assert key == f"key-{value % KEYS}"
                assert partition_of_key[key] == partition
        expected_ends = {p: len(sent_by_partition.get(p, [])) for p in range(PARTITIONS)}
        assert {tp.partition: offset for tp, offset in ends.items()} == expected_ends
        assert committed == expected_ends
    finally:
        try:
            admin.delete_topics([topic], timeout_ms=5_000)
        finally:
            admin.close()


def test_cluster_ids_never_look_like_an_option() -> None:
    # The storage tool parses "-abc..." as an option: 1 random id in 64 started with "-",
    # and the broker then failed to format its storage.
    from tests.kafka_broker_fixture import load_broker_module

    broker = load_broker_module()
    ids = [broker.random_cluster_id() for _ in range(5_000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)

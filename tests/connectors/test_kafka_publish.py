"""`publish` replays raw-message files into the real broker, byte for byte, in arrival order."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from connectors.avro_files import RawMessage
from connectors.kafka_publish import PublishSettings, publish
from connectors.schema_store import SchemaStore
from tests.conftest import T0, WriteFiles, action, message, request

pytestmark = pytest.mark.kafka


def _consume_all(
    bootstrap: str, topic: str, expected: int, budget_s: float = 20.0
) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2_000,
    )
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + budget_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for record in consumer:
                got.append((record.key, record.value))
    finally:
        consumer.close()
    return got


def test_publish_round_trips_every_message(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles, kafka_bootstrap: str
) -> None:
    def stamped(m: RawMessage, minutes: int) -> RawMessage:
        return RawMessage(m.topic, m.key, m.value, T0 + timedelta(minutes=minutes))

    requests = [stamped(message(store, request(i, content=f"c{i % 4}")), 2 * i) for i in range(40)]
    actions = [
        stamped(message(store, action(i, content=f"c{i % 4}")), 2 * i + 1) for i in range(25)
    ]
    requests.append(RawMessage("removal.requests", None, b"\xc3\x01not-avro", None))  # kept as is
    files = write_files(tmp_path, requests, actions)
    prefix = f"t{uuid.uuid4().hex[:8]}."

    started = time.monotonic()
    # 65 messages spread over 80 minutes of arrival time, compressed 2,400x: about 2 s.
    sent = publish(
        files, PublishSettings(kafka_bootstrap, speedup=2_400, topic_prefix=prefix), store
    )
    elapsed = time.monotonic() - started
    assert sent == {prefix + "removal.requests": 41, prefix + "removal.actions": 25}
    assert 1.5 <= elapsed < 15

    got_requests = _consume_all(kafka_bootstrap, prefix + "removal.requests", 41)
    got_actions = _consume_all(kafka_bootstrap, prefix + "removal.actions", 25)
    assert sorted(got_requests, key=repr) == sorted(((m.key, m.value) for m in requests), key=repr)
    assert sorted(got_actions, key=repr) == sorted(((m.key, m.value) for m in actions), key=repr)
    # Per key (= per partition), arrival order is kept.
    for key in {m.key for m in requests if m.key}:
        assert [v for k, v in got_requests if k == key] == [
            m.value for m in requests if m.key == key
        ]

"""A live job replaying older events lands the quarantine rows of undecodable records as it
reads them, not when its watermark reaches their Kafka arrival time.

Against the real broker and Prism: the job (no --stop-at-end) reads events of four days
in 2021 (one partition per topic), with the idle timeout so long that its watermark
follows event time only, as it does through a replay of a backlog. Once the events have
landed (the landing stage's next daily tick is then pending, days ahead of the
watermark), undecodable records arrive: garbage and a tombstone. Their rows must land
too, while the watermark is still in 2021. Stamped with their arrival time (today), they
would wait behind that tick for the watermark to reach today: in a bounded replay, until
the end of the read.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaProducer

from connectors.kafka_publish import PublishSettings, ensure_topics
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC
from pipelines.resources import schemas_dir
from tests.conftest import action, message, request
from tests.streaming_job import StreamingJob

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prism]

# Far above a normal run: the first includes Prism's start-up (~45 s on 2 cores).
START_BUDGET_S = 300.0
QUARANTINE_BUDGET_S = 60.0
# The watermark follows event time alone: a caught-up partition never counts as idle.
ENV = {"REMOVAL_AUDIT_IDLE_TIMEOUT_SECONDS": "86400"}
GARBAGE = b"not an Avro message"  # neither framing: UNKNOWN_ENCODING


def _produce(bootstrap: str, messages: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=60)


def test_undecodable_records_land_in_quarantine_while_the_watermark_is_days_behind(
    kafka_bootstrap: str, prism_location: str, tmp_path: Path
) -> None:
    prefix = f"replay-{uuid.uuid4().hex[:8]}."
    requests, actions = prefix + REQUESTS_TOPIC, prefix + ACTIONS_TOPIC
    # One partition each: a partition with nothing to read would hold the job's watermark
    # at the start of time (it could only move on by idling, to the wall clock).
    ensure_topics(
        PublishSettings(bootstrap_servers=kafka_bootstrap, partitions=1), [requests, actions]
    )
    store = SchemaStore.load(schemas_dir())
    events = [request(n, content=f"c{n}", hours=20 * n) for n in range(1, 6)]
    events += [action(n, content=f"c{n}", hours=20 * n + 3) for n in range(1, 6)]
    valid = [message(store, e) for e in events]
    _produce(kafka_bootstrap, [(prefix + m.topic, m.key, m.value) for m in valid])
    poison = [(requests, b"twitter/c1", GARBAGE), (actions, b"twitter/c2", None)]

    job = StreamingJob(
        tmp_path / "stream.duckdb",
        kafka_bootstrap,
        prefix,
        prism_location,
        tmp_path / "job.log",
        records=len(valid) + len(poison),
        env=ENV,
    )
    try:
        landed = job.wait_for(
            lambda s: s["accounted"] == len(valid) and s["watermark"] is not None,
            START_BUDGET_S,
        )
        _produce(kafka_bootstrap, poison)
        done = job.wait_for(
            lambda s: s["accounted"] == len(valid) + len(poison), QUARANTINE_BUDGET_S
        )
        # Stopped alone, the job stops what it started: no Prism is left running.
        assert job.terminate_alone() == (0, False), job.tail()
    finally:
        if job.alive():
            job.kill()

    # The landed watermark stayed in the events' days: nothing moved it to the wall clock.
    last_event = max(e.event_time for e in events)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert landed["watermark"] <= done["watermark"] <= last_event < today
    con = duckdb.connect(str(job.database), read_only=True)
    try:
        found = con.execute(
            "SELECT topic, reason_code, raw_value FROM quarantine ORDER BY topic DESC"
        ).fetchall()
    finally:
        con.close()
    assert found == [
        (REQUESTS_TOPIC, "UNKNOWN_ENCODING", GARBAGE),
        (ACTIONS_TOPIC, "TRUNCATED", b""),
    ]

"""The quarantine outbox on the real broker: every quarantine row reaches removal.quarantine
once, byte for byte with its headers, and is recorded where the broker put it; later rows go
with the next call; nothing to forward touches no broker.

The rows are what intake makes of real messages (`take_in` -> `rows.quarantine_row`), landed
into a DuckDB file with the project's own DDL.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigFilterType, ConfigResource, ConfigResourceType

from connectors.avro_files import RawMessage
from connectors.duckdb_sink import connect_writer
from connectors.errors import ReasonCode
from connectors.kafka_source import KafkaSourceSettings
from connectors.origin import SourceRef
from connectors.quarantine_topic import (
    HEADER_EVENT_ID,
    HEADER_MESSAGE,
    HEADER_QUARANTINE_ID,
    HEADER_REASON_CODE,
    HEADER_ROOM_BYTES,
    HEADER_SOURCE_REF,
    HEADER_SOURCE_TOPIC,
    QuarantineForwarder,
    QuarantineTopicSettings,
)
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, IntakeRules, Quarantined, take_in
from pipelines.rows import SCHEMAS, Row, quarantine_row
from tests.conftest import action, message, request

# Stricter than the defaults: events of early 2021 are "too old", so a valid event is
# quarantined (with its event_id read) and its bytes decode.
RULES = IntakeRules(
    now=datetime(2026, 1, 1, tzinfo=UTC),
    max_clock_skew_seconds=300,
    oldest_plausible=datetime(2021, 6, 1, tzinfo=UTC),
    max_message_bytes=1_048_576,
)


def quarantined(
    store: SchemaStore, messages: Iterable[tuple[SourceRef, RawMessage]], rules: IntakeRules = RULES
) -> list[Row]:
    """quarantine rows of what intake refuses among `messages` (all must be refused)."""
    found = []
    for origin, raw in messages:
        outcome = take_in(raw, origin, store, rules)
        assert isinstance(outcome, Quarantined), outcome
        found.append(quarantine_row(outcome))
    return found


def land(con: duckdb.DuckDBPyConnection, rows: Sequence[Row]) -> None:
    staged = pa.Table.from_pylist(list(rows), schema=SCHEMAS["quarantine"])
    con.register("staged_quarantine", staged)
    con.execute("INSERT INTO quarantine BY NAME SELECT * FROM staged_quarantine")
    con.unregister("staged_quarantine")


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, up to its end offsets now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "the topic did not deliver its records"
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        consumer.close()


def headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def create_topic(bootstrap: str, topic: str, **configs: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 3, "configs": configs}})
    finally:
        admin.close()


def max_message_bytes(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])],
            config_filter=ConfigFilterType.ALL,
        )
    finally:
        admin.close()
    return int(described["topic"][topic]["max.message.bytes"]["value"])


@pytest.fixture
def prefix() -> str:
    return f"q{uuid.uuid4().hex[:8]}."


@pytest.fixture
def con(tmp_path: Path) -> Any:
    con = connect_writer(tmp_path / "audit.duckdb")
    yield con
    con.close()


def _messages(store: SchemaStore, prefix: str) -> list[tuple[SourceRef, RawMessage]]:
    requests = f"{prefix}removal.requests/0"
    valid = message(store, request(1))
    return [
        (SourceRef(requests, 3), valid),  # too old: event_id known
        (SourceRef(requests, 10), RawMessage(valid.topic, valid.key, valid.value[:-3])),
        (SourceRef(requests, 11), RawMessage(valid.topic, None, valid.value + b"\x00")),
        (SourceRef(requests, 12), RawMessage(valid.topic, b"twitter/c9", b"")),  # a tombstone
        (SourceRef(f"{prefix}removal.actions/1", 0), message(store, action(7))),
    ]


@pytest.mark.kafka
def test_each_row_is_forwarded_once_byte_for_byte_with_its_headers(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    rows = quarantined(store, _messages(store, prefix))
    land(con, rows)
    forwarder = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
    try:
        assert forwarder.forward(con) == len(rows)
        assert forwarder.forward(con) == 0
        # A new forwarder (a restart) finds nothing left either: the table is the record.
        again = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
        assert again.forward(con) == 0
        assert again._producer is None
    finally:
        forwarder.close()

    topic = prefix + "removal.quarantine"
    records = read_topic(kafka_bootstrap, topic)
    assert len(records) == len(rows)
    by_id = {headers(r)[HEADER_QUARANTINE_ID]: r for r in records}
    assert set(by_id) == {row["quarantine_id"] for row in rows}
    for row in rows:
        record = by_id[row["quarantine_id"]]
        assert record.key == row["raw_key"]
        assert record.value == row["raw_value"]
        expected = {
            HEADER_QUARANTINE_ID: row["source_ref"],
            HEADER_REASON_CODE: row["reason_code"],
            HEADER_MESSAGE: row["message"],
            HEADER_SOURCE_TOPIC: row["topic"],
            HEADER_SOURCE_REF: row["source_ref"],
        }
        if row["event_id"] is not None:
            expected[HEADER_EVENT_ID] = row["event_id"]
        assert headers(record) == expected
    # The rows this test relies on are what they claim to be.
    reasons = {row["quarantine_id"]: row["reason_code"] for row in rows}
    assert reasons[f"{prefix}removal.requests/0#3"] == ReasonCode.TIMESTAMP_TOO_OLD
    assert by_id[f"{prefix}removal.requests/0#3"].headers[-1] == (HEADER_EVENT_ID, b"rq-1")
    assert by_id[f"{prefix}removal.requests/0#11"].key is None
    assert by_id[f"{prefix}removal.requests/0#12"].value == b""

    # The table says where each one is, and it is there.
    recorded = con.execute(
        "SELECT quarantine_id, topic, kafka_partition, kafka_offset, refused, forwarded_at "
        "FROM quarantine_forwarded"
    ).fetchall()
    assert {(qid, t, p, o) for qid, t, p, o, _, _ in recorded} == {
        (qid, r.topic, r.partition, r.offset) for qid, r in by_id.items()
    }
    assert all(refused is None and at is not None for *_, refused, at in recorded)


@pytest.mark.kafka
def test_rows_landed_later_go_with_the_next_call(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    rows = quarantined(store, _messages(store, prefix))
    land(con, rows[:2])
    forwarder = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
    try:
        assert forwarder.forward(con) == 2
        assert forwarder.forward(con) == 0
        land(con, rows[2:])
        assert forwarder.forward(con) == len(rows) - 2
        assert forwarder.forward(con) == 0
    finally:
        forwarder.close()
    ids = [
        headers(r)[HEADER_QUARANTINE_ID]
        for r in read_topic(kafka_bootstrap, prefix + "removal.quarantine")
    ]
    assert sorted(ids) == sorted(row["quarantine_id"] for row in rows)


@pytest.mark.kafka
def test_a_backlog_goes_over_several_calls_in_source_order(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    land(con, quarantined(store, _messages(store, prefix)))
    settings = QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix, max_records=2)
    forwarder = QuarantineForwarder(settings)
    calls = []
    try:
        for _ in range(4):
            before = _forwarded_ids(con)
            count = forwarder.forward(con)
            calls.append((count, sorted(_forwarded_ids(con) - before)))
    finally:
        forwarder.close()
    requests, actions = f"{prefix}removal.requests/0", f"{prefix}removal.actions/1"
    # By source, then by offset as a number (#10 after #3, which text order would not give).
    assert calls == [
        (2, sorted([f"{actions}#0", f"{requests}#3"])),
        (2, [f"{requests}#10", f"{requests}#11"]),
        (1, [f"{requests}#12"]),
        (0, []),
    ]
    assert len(read_topic(kafka_bootstrap, prefix + "removal.quarantine")) == 5


def _forwarded_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r for (r,) in con.execute("SELECT quarantine_id FROM quarantine_forwarded").fetchall()}


def test_nothing_to_forward_touches_no_broker(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    # Nothing listens on port 1: any contact with a broker would fail or hang.
    forwarder = QuarantineForwarder(QuarantineTopicSettings("127.0.0.1:1", timeout_s=2))
    started = time.monotonic()
    assert forwarder.forward(con) == 0
    assert forwarder.forward(con) == 0
    assert time.monotonic() - started < 1.0
    assert forwarder._producer is None
    assert con.execute("SELECT count(*) FROM quarantine_forwarded").fetchall() == [(0,)]


@pytest.mark.kafka
def test_the_topic_is_created_when_missing(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert prefix + "removal.quarantine" not in admin.list_topics()
        land(con, quarantined(store, _messages(store, prefix)[:1]))
        forwarder = QuarantineForwarder(
            QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix)
        )
        assert forwarder.forward(con) == 1
        forwarder.close()
        (described,) = admin.describe_topics([prefix + "removal.quarantine"])
        assert len(described["partitions"]) == 3  # as `publish` creates its topics
    finally:
        admin.close()


@pytest.mark.kafka
def test_a_crash_before_the_record_resends_and_consumers_dedupe_by_header(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    rows = quarantined(store, _messages(store, prefix))
    land(con, rows)
    forwarder = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
    assert forwarder.forward(con) == len(rows)
    forwarder.close()
    # As if the process died after the acknowledgements, before its DuckDB commit.
    con.execute(
        "DELETE FROM quarantine_forwarded WHERE quarantine_id = ?", [rows[0]["quarantine_id"]]
    )
    restarted = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
    assert restarted.forward(con) == 1
    restarted.close()

    records = read_topic(kafka_bootstrap, prefix + "removal.quarantine")
    assert len(records) == len(rows) + 1  # at least once: one row is on the topic twice
    deduped = {headers(r)[HEADER_QUARANTINE_ID]: (r.key, r.value) for r in records}
    assert deduped == {row["quarantine_id"]: (row["raw_key"], row["raw_value"]) for row in rows}


@pytest.mark.kafka
def test_it_pickles_without_its_producer_and_works_after(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    rows = quarantined(store, _messages(store, prefix))
    land(con, rows[:1])
    settings = QuarantineTopicSettings(
        kafka_bootstrap, topic_prefix=prefix, security={"security_protocol": "PLAINTEXT"}
    )
    forwarder = QuarantineForwarder(settings)
    assert forwarder.forward(con) == 1
    assert forwarder._producer is not None
    copy = pickle.loads(pickle.dumps(forwarder))
    forwarder.close()
    assert copy._producer is None and copy.settings == settings
    land(con, rows[1:])
    assert copy.forward(con) == len(rows) - 1
    copy.close()


@pytest.mark.kafka
def test_a_record_too_large_for_the_topic_stays_in_duckdb_and_is_not_retried(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    valid = message(store, request(2))
    huge = RawMessage(valid.topic, valid.key, valid.value + bytes(1_100_000))
    origin = SourceRef(f"{prefix}removal.requests/2", 5)
    (row,) = quarantined(store, [(origin, huge)])
    assert row["reason_code"] == ReasonCode.OVERSIZE
    land(con, [row, *quarantined(store, _messages(store, prefix)[:1])])

    forwarder = QuarantineForwarder(QuarantineTopicSettings(kafka_bootstrap, topic_prefix=prefix))
    try:
        assert forwarder.forward(con) == 1  # the other row
        assert forwarder.forward(con) == 0
    finally:
        forwarder.close()
    (refused,) = con.execute(
        "SELECT kafka_partition, kafka_offset, refused FROM quarantine_forwarded "
        "WHERE quarantine_id = ?",
        [row["quarantine_id"]],
    ).fetchall()
    assert refused[:2] == (None, None)
    assert "MessageSizeTooLarge" in refused[2]
    assert len(read_topic(kafka_bootstrap, prefix + "removal.quarantine")) == 1


SOURCE_MAX_BYTES = 4 * 1_048_576
BROKER_DEFAULT_MAX_BYTES = 1_048_588  # Kafka's message.max.bytes default


def _sources_and_big_row(
    bootstrap: str, prefix: str, store: SchemaStore
) -> tuple[QuarantineTopicSettings, Row]:
    """Source topics as the streaming job reads them, requests taking messages up to 4 MiB;
    and the quarantine row of a ~2 MiB request, OVERSIZE for the job but taken by its topic."""
    create_topic(bootstrap, prefix + REQUESTS_TOPIC, **{"max.message.bytes": str(SOURCE_MAX_BYTES)})
    create_topic(bootstrap, prefix + ACTIONS_TOPIC)  # the broker's default limit
    valid = message(store, request(3))
    big = RawMessage(valid.topic, valid.key, valid.value + bytes(2 * 1_048_576))
    (row,) = quarantined(store, [(SourceRef(f"{prefix}{REQUESTS_TOPIC}/1", 8), big)])
    assert row["reason_code"] == ReasonCode.OVERSIZE
    source = KafkaSourceSettings(bootstrap, topic_prefix=prefix)
    return QuarantineTopicSettings.from_source(source), row


@pytest.mark.kafka
def test_what_a_source_topic_took_the_topic_it_creates_takes_byte_for_byte(
    kafka_bootstrap: str, prefix: str, con: duckdb.DuckDBPyConnection, store: SchemaStore
) -> None:
    settings, big = _sources_and_big_row(kafka_bootstrap, prefix, store)
    land(con, [big, *quarantined(store, _messages(store, prefix)[:1])])
    forwarder = QuarantineForwarder(settings)
    try:
        assert forwarder.forward(con) == 2
        assert forwarder.forward(con) == 0
    finally:
        forwarder.close()

    topic = prefix + "removal.quarantine"
    # The largest source topic's limit (requests', not actions' default) plus the headers.
    assert max_message_bytes(kafka_bootstrap, topic) == SOURCE_MAX_BYTES + HEADER_ROOM_BYTES
    by_id = {headers(r)[HEADER_QUARANTINE_ID]: r for r in read_topic(kafka_bootstrap, topic)}
    assert len(by_id) == 2
    record = by_id[big["quarantine_id"]]
    assert (record.key, record.value) == (big["raw_key"], big["raw_value"])
    assert len(record.value) > 2 * 1_048_576
    assert headers(record)[HEADER_REASON_CODE] == ReasonCode.OVERSIZE
    ((refused,),) = con.execute(
        "SELECT refused FROM quarantine_forwarded WHERE quarantine_id = ?", [big["quarantine_id"]]
    ).fetchall()
    assert refused is None


@pytest.mark.kafka
def test_an_existing_topic_keeps_its_limit_and_the_log_says_which_config_to_raise(
    kafka_bootstrap: str,
    prefix: str,
    con: duckdb.DuckDBPyConnection,
    store: SchemaStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, big = _sources_and_big_row(kafka_bootstrap, prefix, store)
    topic = prefix + "removal.quarantine"
    create_topic(kafka_bootstrap, topic)  # beforehand, at the broker's default limit
    land(con, [big, *quarantined(store, _messages(store, prefix)[:1])])
    forwarder = QuarantineForwarder(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.quarantine_topic"):
            assert forwarder.forward(con) == 1  # the other row
            assert forwarder.forward(con) == 0  # refused for good: not retried
    finally:
        forwarder.close()

    assert max_message_bytes(kafka_bootstrap, topic) == BROKER_DEFAULT_MAX_BYTES  # untouched
    assert len(read_topic(kafka_bootstrap, topic)) == 1
    (refused,) = con.execute(
        "SELECT kafka_partition, kafka_offset, refused FROM quarantine_forwarded "
        "WHERE quarantine_id = ?",
        [big["quarantine_id"]],
    ).fetchall()
    assert refused[:2] == (None, None)
    assert "MessageSizeTooLarge" in refused[2] and f"max.message.bytes of {topic}" in refused[2]

    needed = SOURCE_MAX_BYTES + HEADER_ROOM_BYTES
    # At start: the topic is smaller than a source topic, and by how much.
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{topic} takes records up to {BROKER_DEFAULT_MAX_BYTES} bytes" in warned
    assert f"{prefix}{REQUESTS_TOPIC} takes {SOURCE_MAX_BYTES}" in warned
    assert f"raise max.message.bytes of {topic} to {needed}" in warned
    # For the row: which one, why, and which config to raise to what.
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"quarantine row {big['quarantine_id']} stays in DuckDB only" in error
    assert f"more than {topic} takes (max.message.bytes={BROKER_DEFAULT_MAX_BYTES})" in error
    assert f"raise max.message.bytes of {topic} to at least {needed}" in error


def test_settings_from_the_project_settings_keep_passwords_out_of_repr() -> None:
    from pydantic import SecretStr

    from pipelines.settings import Settings

    settings = Settings(
        kafka_bootstrap_servers="broker:9093",
        kafka_topic_prefix="prod.",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="audit",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    topic = QuarantineTopicSettings.from_settings(settings)
    assert topic.topic == "prod.removal.quarantine"
    assert "s3cret" not in repr(topic)
    config = topic.producer_config()
    assert config["sasl_plain_password"] == "s3cret" and config["acks"] == "all"
    assert config["enable_idempotence"] and not config["allow_auto_create_topics"]
    assert "ssl_cafile" not in config
    assert dataclasses.replace(topic, topic_prefix="").topic == "removal.quarantine"


def test_settings_from_the_streaming_source_share_its_broker_and_security() -> None:
    from connectors.kafka_source import KafkaSourceSettings

    source = KafkaSourceSettings(
        "broker:9093",
        topic_prefix="prod.",
        security_protocol="SSL",
        ssl_cafile="/etc/ca.pem",
        ssl_password="s3cret",
    )
    topic = QuarantineTopicSettings.from_source(source, max_records=500)
    assert (topic.bootstrap_servers, topic.topic, topic.max_records) == (
        "broker:9093",
        "prod.removal.quarantine",
        500,
    )
    # The topics whose records it gets: its own topic must take what they take.
    assert topic.source_topics == ("prod.removal.requests", "prod.removal.actions")
    assert "s3cret" not in repr(topic)
    config = topic.admin_config()
    assert config["security_protocol"] == "SSL" and config["ssl_cafile"] == "/etc/ca.pem"
    assert config["ssl_password"] == "s3cret"
    assert "group_id" not in config and "auto_offset_reset" not in config

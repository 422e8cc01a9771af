"""The stack's floor: consume from Kafka, decode with fastavro, append to DuckDB from Arrow.

No logic at all: no validation beyond what fastavro does, no dedupe, no matching. It is
what the same libraries cost on the same machine, so the pipeline's throughput is reported
as a ratio to it. The decoded records land in `floor_requests` and `floor_actions` (one row
per delivery, every field of the subject's reader schema, plus the Kafka partition and
offset and the writer schema version), which is also the input of the plain-SQL
alternative (`bench/sql_alternative.py`).

Payloads are single-object encoded (2-byte marker, 8-byte writer fingerprint, body), as the
project's producers write them; a payload that does not decode is counted, not landed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from fastavro import schemaless_reader
from kafka import KafkaConsumer, TopicPartition

from connectors.schema_store import SchemaStore, SchemaVersion
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, SUBJECTS

TABLES = {REQUESTS_TOPIC: "floor_requests", ACTIONS_TOPIC: "floor_actions"}
HEADER = 10  # single-object encoding: C3 01 + 8-byte CRC-64-AVRO fingerprint
APPEND_ROWS = 50_000


@dataclass(frozen=True)
class FloorResult:
    messages: int  # consumed
    landed: int  # decoded and appended
    undecodable: int
    seconds: float  # first poll to last append committed

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class _Decoder:
    """fastavro's schemaless reader with the writer schema found by fingerprint."""

    def __init__(self, store: SchemaStore, topic: str) -> None:
        self._subject = SUBJECTS[topic]
        self._reader = store.reader(self._subject)
        self._store = store
        self._writers: dict[bytes, SchemaVersion | None] = {}

    def __call__(self, payload: bytes) -> dict[str, Any] | None:
        fp = payload[2:HEADER]
        writer = self._writers.get(fp, ...)
        if writer is ...:
            found = self._store.by_fingerprint(fp)
            writer = found if found is not None and found.subject == self._subject else None
            self._writers[fp] = writer
        if writer is None or payload[:2] != b"\xc3\x01":
            return None
        body = io.BytesIO(payload[HEADER:])
        try:
            record: dict[str, Any] = schemaless_reader(
                body,
                writer.schema,
                None if writer == self._reader else self._reader.schema,  # resolve old ones
            )
        except Exception:  # any corrupt body: the floor only counts it
            return None
        if body.tell() != len(payload) - HEADER:  # bytes after the record: not one record
            return None
        record["schema_version"] = writer.version
        return record


def create_tables(con: duckdb.DuckDBPyConnection, store: SchemaStore) -> None:
    """One table per input topic, its columns the reader schema's fields."""
    for topic, table in TABLES.items():
        reader: Any = store.reader(SUBJECTS[topic]).schema
        columns = ", ".join(f"{f['name']} {_duck_type(f['type'])}" for f in reader["fields"])
        con.execute(
            f"CREATE OR REPLACE TABLE {table} ({columns}, schema_version INTEGER, "
            "kafka_partition INTEGER, kafka_offset BIGINT)"
        )


def _duck_type(avro: Any) -> str:
    if isinstance(avro, list):  # ["null", T]
        return _duck_type(next(t for t in avro if t != "null"))
    if isinstance(avro, dict):
        if avro.get("logicalType", "").startswith("timestamp"):
            return "TIMESTAMPTZ"
        return {"enum": "VARCHAR", "string": "VARCHAR"}.get(avro["type"], "VARCHAR")
    return {"string": "VARCHAR", "int": "INTEGER", "long": "BIGINT", "boolean": "BOOLEAN"}.get(
        avro, "VARCHAR"
    )


def consume(
    bootstrap: str, prefix: str, ends: Mapping[tuple[str, int], int]
) -> Iterator[tuple[str, int, int, bytes]]:
    """(topic without prefix, partition, offset, value) of every message up to `ends`
    (end offsets by (full topic, partition)), from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        tps = [TopicPartition(t, p) for (t, p), end in ends.items() if end > 0]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp: ends[(tp.topic, tp.partition)] for tp in tps}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                end = remaining.get(tp)
                if end is None:
                    continue
                topic = tp.topic[len(prefix) :]
                for r in records:
                    if r.offset < end:
                        yield topic, tp.partition, r.offset, r.value
                if records and records[-1].offset >= end - 1:
                    del remaining[tp]
                    consumer.pause(tp)
    finally:
        consumer.close()


def land(
    con: duckdb.DuckDBPyConnection,
    store: SchemaStore,
    messages: Iterable[tuple[str, int, int, bytes]],
) -> tuple[int, int, int]:
    """Decode and append `messages`; returns (messages, landed, undecodable)."""
    decoders = {topic: _Decoder(store, topic) for topic in TABLES}
    pending: dict[str, list[dict[str, Any]]] = {topic: [] for topic in TABLES}
    seen = landed = bad = 0
    for topic, partition, offset, value in messages:
        seen += 1
        record = decoders[topic](value)
        if record is None:
            bad += 1
            continue
        record["kafka_partition"], record["kafka_offset"] = partition, offset
        rows = pending[topic]
        rows.append(record)
        if len(rows) >= APPEND_ROWS:
            landed += _append(con, TABLES[topic], rows)
            rows.clear()
    for topic, rows in pending.items():
        if rows:
            landed += _append(con, TABLES[topic], rows)
    return seen, landed, bad


def _append(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> int:
    batch = pa.Table.from_pylist(rows)  # the SQL below reads it by name
    names = ", ".join(batch.column_names)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM batch")
    return len(rows)


def run_floor(
    database: str, bootstrap: str, prefix: str, ends: Mapping[tuple[str, int], int]
) -> FloorResult:
    """Consume every message below `ends`, decode, land in `database`; timed."""
    store = SchemaStore.load(None)
    con = duckdb.connect(database)
    try:
        create_tables(con, store)
        started = time.perf_counter()
        seen, landed, bad = land(con, store, consume(bootstrap, prefix, ends))
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
    finally:
        con.close()
    return FloorResult(messages=seen, landed=landed, undecodable=bad, seconds=seconds)

"""Poison matrix against the real broker: every kind of bad message, injected into a live
stream, is quarantined with its own reason and its exact bytes, and the job carries on.

One streaming job (`removal-audit run --source kafka`, no --stop-at-end) reads fresh
topics, fed in two waves:

1. the valid scenario with poison interleaved: at least two messages of every class but
   TIMESTAMP_IN_FUTURE, spread over both topics and every partition (UNKNOWN_ENUM_SYMBOL:
   the requests topic only, see below);
2. once all of it is accounted for and the job has caught up (its watermark follows the
   wall clock: a live job's steady state), valid events with the future timestamps and
   the event_id conflicts (whose originals landed in wave 1) interleaved, then valid
   events only.

One run (module fixture), then one verdict per property:

- the job stays up until every record produced is accounted for; SIGTERM, exit code 0;
- per class, the quarantine holds exactly the injected messages with that reason code,
  each at the offset it was produced at, with its event_id and value byte for byte
  (and, a separate verdict, its key);
- no poison reached request_events, action_events, requests or lifecycle_transitions,
  and the audit tables equal what the batch path makes of the valid events alone;
- the valid requests written with the newer (v3) schema landed, as schema version 3;
- stream_account balances: every offset produced = landed + duplicates + quarantined;
- each repeated delivery is a duplicate naming its original (the lower offset), as in the
  batch path, whatever order the job met the copies in;
- the topic `<prefix>removal.quarantine` holds every quarantined record.

The job runs with a site schema catalog (REMOVAL_AUDIT_SCHEMAS_DIR, tests/site_catalog.py),
as a deployment whose producers moved on first: the packaged catalog plus request v3, which
adds a category symbol, registered with the reader pinned to v2. Some valid requests are
written with v3 and land (resolved to v2; schema_version 3, in both paths); v3 requests
with the new symbol are UNKNOWN_ENUM_SYMBOL. The batch path runs with the same catalog. A
producer writing with a schema no catalog holds (e.g. a new ActionType symbol) is
UNKNOWN_FINGERPRINT, injected too. The one class the live job cannot be given:
INVALID_VALUE is only given to a topic intake does not know, and the job reads only its
two topics.

A tombstone (null value) and an empty value are both TRUNCATED ("empty payload"): the
source hands a null value to intake as b"", and quarantine.raw_value is NOT NULL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from connectors.avro_codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    decode,
    encode_body,
    encode_confluent,
    encode_single_object,
)
from connectors.avro_files import RAW_MESSAGE_SUBJECT, RawMessage, write_raw_messages
from connectors.duckdb_reader import connect_auditor
from connectors.errors import ReasonCode
from connectors.schema_store import SchemaStore, SchemaVersion, schema_fingerprint
from pipelines.batch import run_batch
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, SUBJECTS
from pipelines.model import EPOCH, ActionEvent, ActionType, Category, RequestEvent, RequestEventType
from pipelines.resources import schemas_dir
from pipelines.settings import Settings
from tests.conftest import T0, action, request
from tests.site_catalog import NEW_CATEGORY, write_site_catalog
from tests.streaming_job import (
    AUDIT_TABLES,
    StreamingJob,
    content_fingerprints,
    end_offsets,
    landed_runs,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prism]

QUARANTINE_TOPIC = "removal.quarantine"
QUARANTINE_ID_HEADER = "removal-audit.quarantine-id"
REASON_CODE_HEADER = "removal-audit.reason-code"
PARTITIONS = 3
# The intake rules, set outright for both paths (the defaults; a developer's .env must not
# move the boundaries the poison is built against).
MAX_MESSAGE_BYTES = 1_048_576
MAX_CLOCK_SKEW_S = 300
OLDEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
INTAKE_ENV = {
    "REMOVAL_AUDIT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    "REMOVAL_AUDIT_MAX_CLOCK_SKEW_SECONDS": str(MAX_CLOCK_SKEW_S),
    "REMOVAL_AUDIT_OLDEST_PLAUSIBLE": OLDEST_PLAUSIBLE.isoformat(),
}
# The topics take messages beyond the job's limit, or OVERSIZE could not be produced.
TOPIC_MAX_BYTES = 8 * 1_048_576
LATER = 40  # valid messages in the second wave
# Failure budgets, far above a normal run (~70 s in all). The first includes Prism's
# start-up (~45 s on 2 cores, more when other jobs share them).
START_BUDGET_S = 300.0
PHASE_BUDGET_S = 90.0
SETTLE_BUDGET_S = 60.0
# Every table the valid events alone determine (quarantine is the poison's).
VALID_TABLES = tuple(t for t in AUDIT_TABLES if t != "quarantine")
TOMBSTONE, EMPTY_VALUE = "tombstone (null value)", "empty value"

REQUESTS_SUBJECT, ACTIONS_SUBJECT = SUBJECTS[REQUESTS_TOPIC], SUBJECTS[ACTIONS_TOPIC]
V1_ONLY = ("event_type", "authority_kind", "withdrawn_at")  # fields v2 added
V3_FRAMINGS = ("single-object", "confluent")


@dataclasses.dataclass(frozen=True)
class Injection:
    """One message to produce. `reason` None: valid (lands, or is a duplicate);
    `partition` None: the producer's key hash decides. `event_id`: what quarantine
    should record (only a payload that decodes has one)."""

    label: str
    topic: str  # logical
    key: bytes | None
    value: bytes | None
    reason: ReasonCode | None = None
    partition: int | None = None
    event_id: str | None = None

    @property
    def quarantined_value(self) -> bytes:
        # A null value reaches intake as an empty payload (connectors/kafka_source.py).
        return b"" if self.value is None else self.value


@dataclasses.dataclass(frozen=True)
class Produced:
    injection: Injection
    kafka_topic: str
    partition: int
    offset: int

    @property
    def source_ref(self) -> str:
        return f"{self.kafka_topic}/{self.partition}#{self.offset}"


# --- the valid scenario ----------------------------------------------------------------


def _key(event: RequestEvent | ActionEvent) -> bytes:
    return f"{event.platform}/{event.content_id}".encode()


def _valid(store: SchemaStore, event: RequestEvent | ActionEvent, framing: str) -> Injection:
    """A valid event, in one of the framings and writer versions producers use ("v3": the
    site catalog's newer request version, single-object or Confluent by the event's n)."""
    if isinstance(event, RequestEvent):
        topic, subject, record = REQUESTS_TOPIC, REQUESTS_SUBJECT, event.to_avro()
    else:
        topic, subject, record = ACTIONS_TOPIC, ACTIONS_SUBJECT, event.to_avro()
    if framing == "v1":
        record = {k: v for k, v in record.items() if k not in V1_ONLY}
        value = encode_single_object(record, subject, store, version=1)
    elif framing == "v3 single-object":
        value = encode_single_object(record, subject, store, version=3)
    elif framing == "v3 confluent":
        value = encode_confluent(record, subject, store, version=3)
    elif framing == "confluent":
        value = encode_confluent(record, subject, store)
    else:
        value = encode_single_object(record, subject, store)
    label = f"valid {event.event_id}" + (f" ({framing})" if framing.startswith("v3") else "")
    return Injection(label, topic, _key(event), value)


def valid_scenario(store: SchemaStore, rng: random.Random) -> list[Injection]:
    """~300 messages over 60 contents in February 2021, in event-time order: requests
    (some v1, some v3 of the site catalog, some Confluent, some withdrawn later), actions of
    every kind, and a few identical repeated deliveries (each after its original, on the
    same key)."""
    contents = [f"pm{i}" for i in range(60)]
    categories = list(Category)
    timed: list[tuple[datetime, Injection]] = []
    requests: list[RequestEvent] = []
    for n in range(150):
        req = request(
            n,
            content=contents[n % len(contents)],
            hours=rng.uniform(0, 20 * 24),
            category=rng.choice(categories),
            jurisdiction=rng.choice(["RU", "DE", "IN"]),
        )
        requests.append(req)
        framing = (
            "v1"
            if n % 11 == 0
            else "confluent"
            if n % 7 == 0
            else f"v3 {V3_FRAMINGS[n // 10 % 2]}"
            if n % 10 == 3
            else "single-object"
        )
        timed.append((req.event_time, _valid(store, req, framing)))
    for n, req in enumerate(rng.sample(requests, 10)):
        withdrawn = dataclasses.replace(
            req,
            event_id=f"rw-{n}",
            event_type=RequestEventType.WITHDRAWN,
            withdrawn_at=req.issued_at + timedelta(hours=rng.uniform(1, 72)),
        )
        timed.append((withdrawn.event_time, _valid(store, withdrawn, "single-object")))
    kinds = list(ActionType)
    for n in range(120):
        target = rng.choice(requests)
        kind = rng.choice(kinds)
        act = action(
            n,
            content=target.content_id,
            hours=(target.issued_at - T0).total_seconds() / 3600 + rng.uniform(-2, 96),
            kind=kind,
            jurisdiction=target.jurisdiction if kind is ActionType.RESTRICTED else None,
            request_id=target.request_id if n % 3 == 0 else None,
        )
        framing = "confluent" if n % 5 == 0 else "single-object"
        timed.append((act.event_time, _valid(store, act, framing)))
    timed.sort(key=lambda pair: pair[0])
    messages = [injection for _, injection in timed]
    for n, original in enumerate(rng.sample(messages, 12)):
        at = messages.index(original) + rng.randint(1, 30)
        messages.insert(at, dataclasses.replace(original, label=f"repeat {n} of {original.label}"))
    return messages


# --- the poison ------------------------------------------------------------------------


def _zigzag(n: int) -> bytes:
    value, out = (n << 1) ^ (n >> 63), bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _avro_string(text: str) -> bytes:
    raw = text.encode()
    return _zigzag(len(raw)) + raw


def _bad_request(n: int, **changes: Any) -> RequestEvent:
    """A request of the poison's own (ids px-rq-n, PXn; content pxn), with `changes`."""
    ids = {"event_id": f"px-rq-{n}", "request_id": f"PX{n}"}
    return dataclasses.replace(request(n, content=f"px{n}", hours=n), **{**ids, **changes})


def _bad_action(n: int, **changes: Any) -> ActionEvent:
    """An action of the poison's own (ids px-ac-n, PXAn; content pxn), with `changes`."""
    ids = {"event_id": f"px-ac-{n}", "action_id": f"PXA{n}"}
    return dataclasses.replace(action(n, content=f"px{n}", hours=n), **{**ids, **changes})


def _unregistered_action_writer() -> SchemaVersion:
    """platform_action v1 plus an ActionType symbol, in no catalog: a producer that moved
    on before the catalog did."""
    schema = json.loads((schemas_dir() / "platform_action" / "v1.avsc").read_text("utf-8"))
    kind = next(f for f in schema["fields"] if f["name"] == "action")
    kind["type"]["symbols"].append("GEO_BLOCKED")
    parsed = parse_schema(schema, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(ACTIONS_SUBJECT, 2, None, parsed, canonical, schema_fingerprint(canonical))


def poison(store: SchemaStore, now: datetime) -> list[Injection]:
    """At least two messages of every reachable class, over both topics and all partitions.
    `store`: the job's site catalog (tests/site_catalog.py)."""
    rq, ac = REQUESTS_TOPIC, ACTIONS_TOPIC
    latest_rq, latest_ac = store.reader(REQUESTS_SUBJECT), store.reader(ACTIONS_SUBJECT)
    rq_so = encode_single_object(_bad_request(1).to_avro(), REQUESTS_SUBJECT, store)
    ac_so = encode_single_object(_bad_action(2).to_avro(), ACTIONS_SUBJECT, store)
    ac_cf = encode_confluent(_bad_action(3).to_avro(), ACTIONS_SUBJECT, store)
    rq_cf = encode_confluent(_bad_request(4).to_avro(), REQUESTS_SUBJECT, store)
    rq_body = encode_body(_bad_request(5).to_avro(), latest_rq)
    so_header = SINGLE_OBJECT_MAGIC + latest_rq.fingerprint
    geo_blocked_writer = _unregistered_action_writer()
    geo_blocked = {**_bad_action(6).to_avro(), "action": "GEO_BLOCKED"}
    # The body starts with event_id: "XX" encodes as 04 58 58; make it invalid UTF-8.
    utf8_body = encode_body(_bad_action(7, event_id="XX").to_avro(), latest_ac)
    # request_id is the third field, a union; its branch index (after two strings) -> -1.
    a8 = _bad_action(8)
    union_at = len(_avro_string(a8.event_id) + _avro_string(a8.action_id))
    union_body = encode_body(a8.to_avro(), latest_ac)
    # issued_at is second to last (before withdrawn_at = null): a millisecond count beyond
    # what a datetime can hold.
    r9 = _bad_request(9)
    ms = int(r9.issued_at.timestamp() * 1000)
    r9_body = encode_body(r9.to_avro(), latest_rq)
    far_body = r9_body[: -(len(_zigzag(ms)) + 1)] + _zigzag(2**62) + b"\x00"
    raw_message = encode_single_object(
        RawMessage(rq, b"k", rq_so).to_record(), RAW_MESSAGE_SUBJECT, store
    )
    # An otherwise valid request whose payload is one byte over the job's limit.
    big = _bad_request(10, legal_basis="")
    pad = MAX_MESSAGE_BYTES + 1 - len(encode_single_object(big.to_avro(), REQUESTS_SUBJECT, store))
    for _ in range(3):  # the string's length prefix grows with it
        big = dataclasses.replace(big, legal_basis="x" * pad)
        size = len(encode_single_object(big.to_avro(), REQUESTS_SUBJECT, store))
        pad += MAX_MESSAGE_BYTES + 1 - size
    oversize_request = encode_single_object(big.to_avro(), REQUESTS_SUBJECT, store)
    assert len(oversize_request) == MAX_MESSAGE_BYTES + 1

    def so_request(event: RequestEvent) -> bytes:
        return encode_single_object(event.to_avro(), REQUESTS_SUBJECT, store)

    def so_action(event: ActionEvent) -> bytes:
        return encode_single_object(event.to_avro(), ACTIONS_SUBJECT, store)

    def record(event: RequestEvent | ActionEvent) -> str | None:
        return event.event_id or None

    # Request v3 (the site catalog's, newer than the reader) with the symbol it adds.
    new_category = {**_bad_request(25).to_avro(), "category": NEW_CATEGORY}
    withdrawn_no_time = _bad_request(11, event_type=RequestEventType.WITHDRAWN)
    no_content = _bad_request(12, content_id="")
    no_event_id = _bad_action(13, event_id="")
    restricted_nowhere = _bad_action(14, action=ActionType.RESTRICTED, jurisdiction=None)
    in_future = _bad_request(15, issued_at=now + timedelta(days=2))
    withdrawn_future = _bad_request(
        16, event_type=RequestEventType.WITHDRAWN, withdrawn_at=now + timedelta(hours=1)
    )
    acted_2100 = _bad_action(17, acted_at=datetime(2100, 1, 1, tzinfo=UTC))
    too_old = _bad_request(18, issued_at=OLDEST_PLAUSIBLE - timedelta(milliseconds=1))
    acted_1960 = _bad_action(19, acted_at=datetime(1960, 6, 1, tzinfo=UTC))
    R = ReasonCode
    return [
        Injection("cut body", rq, b"twitter/px1", rq_so[:-4], R.TRUNCATED, 0),
        Injection("cut Confluent header", ac, b"twitter/px3", ac_cf[:3], R.TRUNCATED, 1),
        Injection("last byte missing", ac, b"twitter/px2", ac_so[:-1], R.TRUNCATED, 2),
        Injection(TOMBSTONE, rq, b"twitter/px20", None, R.TRUNCATED, 1),
        Injection(TOMBSTONE, ac, b"twitter/px21", None, R.TRUNCATED, 2),
        Injection(EMPTY_VALUE, rq, b"twitter/px22", b"", R.TRUNCATED, 2),
        Injection(EMPTY_VALUE, ac, None, b"", R.TRUNCATED, 0),
        Injection("one byte more", rq, b"twitter/px1", rq_so + b"\x00", R.TRAILING_BYTES, 1),
        Injection("two records", ac, b"twitter/px2", ac_so + ac_so, R.TRAILING_BYTES, 2),
        Injection(
            "unknown fingerprint",
            rq,
            b"twitter/px5",
            SINGLE_OBJECT_MAGIC + bytes(range(8)) + rq_body,
            R.UNKNOWN_FINGERPRINT,
            2,
        ),
        Injection(
            "writer schema not in the catalog",
            ac,
            b"twitter/px6",
            SINGLE_OBJECT_MAGIC
            + geo_blocked_writer.fingerprint
            + encode_body(geo_blocked, geo_blocked_writer),
            R.UNKNOWN_FINGERPRINT,
            0,
        ),
        Injection(
            "registry id 999",
            rq,
            b"twitter/px5",
            CONFLUENT_MAGIC + (999).to_bytes(4, "big") + rq_body,
            R.UNKNOWN_SCHEMA_ID,
            0,
        ),
        Injection(
            "registry id 2^31-1",
            ac,
            b"twitter/px3",
            CONFLUENT_MAGIC + (2**31 - 1).to_bytes(4, "big") + ac_cf[5:],
            R.UNKNOWN_SCHEMA_ID,
            1,
        ),
        Injection("JSON", rq, b"twitter/px23", b'{"event_id": "px-json"}', R.UNKNOWN_ENCODING, 1),
        Injection("bad magic", ac, None, b"\xc3\x02" + bytes(20), R.UNKNOWN_ENCODING, 2),
        Injection("an action on requests", rq, b"twitter/px2", ac_so, R.INCOMPATIBLE_SCHEMA, 2),
        Injection("a request on actions", ac, b"twitter/px4", rq_cf, R.INCOMPATIBLE_SCHEMA, 0),
        Injection("a raw-message record", rq, b"k", raw_message, R.INCOMPATIBLE_SCHEMA, 0),
        Injection(
            "invalid UTF-8",
            ac,
            b"twitter/px7",
            SINGLE_OBJECT_MAGIC + latest_ac.fingerprint + b"\x04\xff\xfe" + utf8_body[3:],
            R.MALFORMED_BODY,
            1,
        ),
        Injection(
            "union index -1",
            ac,
            b"twitter/px8",
            SINGLE_OBJECT_MAGIC
            + latest_ac.fingerprint
            + union_body[:union_at]
            + _zigzag(-1)
            + union_body[union_at + 1 :],
            R.MALFORMED_BODY,
            2,
        ),
        Injection(
            "timestamp beyond datetime",
            rq,
            b"twitter/px9",
            so_header + far_body,
            R.MALFORMED_BODY,
            1,
        ),
        Injection(
            "WITHDRAWN without withdrawn_at",
            rq,
            _key(withdrawn_no_time),
            so_request(withdrawn_no_time),
            R.MISSING_REQUIRED_FIELD,
            0,
            record(withdrawn_no_time),
        ),
        Injection(
            "empty content_id",
            rq,
            b"twitter/",
            so_request(no_content),
            R.MISSING_REQUIRED_FIELD,
            2,
            record(no_content),
        ),
        Injection(
            "empty event_id",
            ac,
            _key(no_event_id),
            so_action(no_event_id),
            R.MISSING_REQUIRED_FIELD,
            1,
            record(no_event_id),
        ),
        Injection(
            "RESTRICTED without jurisdiction",
            ac,
            _key(restricted_nowhere),
            so_action(restricted_nowhere),
            R.MISSING_REQUIRED_FIELD,
            2,
            record(restricted_nowhere),
        ),
        Injection(
            "issued in two days",
            rq,
            _key(in_future),
            so_request(in_future),
            R.TIMESTAMP_IN_FUTURE,
            1,
            record(in_future),
        ),
        Injection(
            "withdrawn in an hour",
            rq,
            _key(withdrawn_future),
            so_request(withdrawn_future),
            R.TIMESTAMP_IN_FUTURE,
            2,
            record(withdrawn_future),
        ),
        Injection(
            "acted in 2100",
            ac,
            _key(acted_2100),
            so_action(acted_2100),
            R.TIMESTAMP_IN_FUTURE,
            0,
            record(acted_2100),
        ),
        Injection(
            "issued 1 ms too early",
            rq,
            _key(too_old),
            so_request(too_old),
            R.TIMESTAMP_TOO_OLD,
            2,
            record(too_old),
        ),
        Injection(
            "acted in 1960",
            ac,
            _key(acted_1960),
            so_action(acted_1960),
            R.TIMESTAMP_TOO_OLD,
            1,
            record(acted_1960),
        ),
        Injection(
            "v3 category the reader lacks",
            rq,
            b"twitter/px25",
            encode_single_object(new_category, REQUESTS_SUBJECT, store, version=3),
            R.UNKNOWN_ENUM_SYMBOL,
            0,
        ),
        Injection(
            "v3 category the reader lacks, Confluent",
            rq,
            b"twitter/px25",
            encode_confluent(new_category, REQUESTS_SUBJECT, store, version=3),
            R.UNKNOWN_ENUM_SYMBOL,
            1,
        ),
        Injection(
            "v3 category the reader lacks, withdrawn",
            rq,
            b"twitter/px26",
            encode_single_object(
                {
                    **new_category,
                    "event_id": "px-rq-26",
                    "event_type": "WITHDRAWN",
                    "withdrawn_at": datetime(2021, 2, 3, tzinfo=UTC),
                },
                REQUESTS_SUBJECT,
                store,
                version=3,
            ),
            R.UNKNOWN_ENUM_SYMBOL,
            2,
        ),
        Injection("limit + 1 bytes", rq, _key(big), oversize_request, R.OVERSIZE, 0),
        Injection(
            "1.5 MiB of garbage", ac, b"twitter/px24", b"\xff" * (3 * 524_288), R.OVERSIZE, 1
        ),
    ]


def conflicts(originals: Iterable[Injection], store: SchemaStore) -> list[Injection]:
    """Other content under event_ids that already landed (same key, so same partition)."""
    out = []
    changed: dict[str, Any]
    for original in originals:
        if original.topic == REQUESTS_TOPIC:
            subject = REQUESTS_SUBJECT
            changed = {"legal_basis": "another law"}
        else:
            subject = ACTIONS_SUBJECT
            changed = {"acted_at": datetime(2021, 3, 15, tzinfo=UTC)}
        record = _decode_valid(original, store)
        value = encode_single_object({**record, **changed}, subject, store)
        out.append(
            Injection(
                f"conflict with {original.label}",
                original.topic,
                original.key,
                value,
                ReasonCode.EVENT_ID_CONFLICT,
                None,
                record["event_id"],
            )
        )
    return out


def _decode_valid(injection: Injection, store: SchemaStore) -> dict[str, Any]:
    assert injection.value is not None
    return decode(injection.value, SUBJECTS[injection.topic], store).record


def interleave(valid: list[Injection], bad: list[Injection], rng: random.Random) -> list[Injection]:
    out = list(valid)
    for item in bad:
        out.insert(rng.randint(0, len(out)), item)
    return out


# --- the broker ------------------------------------------------------------------------


def create_topics(bootstrap: str, prefix: str) -> None:
    """Both input topics and the quarantine topic, each taking messages up to
    TOPIC_MAX_BYTES: what the inputs accept, the quarantine must be able to hold."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(
                    prefix + topic,
                    PARTITIONS,
                    1,
                    topic_configs={"max.message.bytes": str(TOPIC_MAX_BYTES)},
                )
                for topic in (REQUESTS_TOPIC, ACTIONS_TOPIC, QUARANTINE_TOPIC)
            ]
        )
    finally:
        admin.close()


def produce(bootstrap: str, prefix: str, messages: list[Injection]) -> list[Produced]:
    """Send in order (idempotent, so per partition the offsets keep that order)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=TOPIC_MAX_BYTES,
    )
    try:
        futures = [
            producer.send(prefix + m.topic, key=m.key, value=m.value, partition=m.partition)
            for m in messages
        ]
        producer.flush(timeout=60)
        sent = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=60)
    return [
        Produced(m, s.topic, s.partition, s.offset) for m, s in zip(messages, sent, strict=True)
    ]


# --- what the database holds -----------------------------------------------------------


def _query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect_auditor(database)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _settled(job: StreamingJob, expected: Mapping[str, tuple[int, str]]) -> bool:
    """Whether the snapshot's valid-event tables equal the batch path's (late events'
    releases land a batch or two after the events themselves)."""
    try:
        return content_fingerprints(job.snapshot, VALID_TABLES) == expected
    except duckdb.Error:  # the snapshot is being replaced
        return False


def _bytes(value: bytes | None) -> str | None:
    """Bytes as a short comparable text (the oversize ones would drown an assertion diff)."""
    if value is None:
        return None
    return f"{len(value)} bytes sha256:{hashlib.sha256(value).hexdigest()[:16]}"


def _diff(found: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """What differs between two mappings, one line per entry."""
    lines = [f"missing: {k}: {v}" for k, v in expected.items() if k not in found]
    lines += [f"unexpected: {k}: {v}" for k, v in found.items() if k not in expected]
    lines += [
        f"differs: {k}: {found[k]} != {v}"
        for k, v in expected.items()
        if k in found and found[k] != v
    ]
    return "\n".join(sorted(lines))


def assert_quarantine(database: Path, poisoned: list[Produced]) -> None:
    rows = {
        row[0]: row[1:]
        for row in _query(
            database,
            "SELECT source_ref, quarantine_id, topic, reason_code, event_id, raw_value "
            "FROM quarantine",
        )
    }
    # Per class (and per odd input), exactly as many quarantined as injected.
    label = {p.source_ref: p.injection.label for p in poisoned}
    found = Counter(f"{r[2]}: {label.get(ref, f'not injected: {ref}')}" for ref, r in rows.items())
    injected = Counter(f"{p.injection.reason}: {p.injection.label}" for p in poisoned)
    assert found == injected, _diff(found, injected)
    # Each at the offset it was produced at, with its topic, event_id and value bytes.
    found_rows = {
        f"{label.get(ref, 'NOT INJECTED')} at {ref}": (qid, topic, reason, event_id, _bytes(value))
        for ref, (qid, topic, reason, event_id, value) in rows.items()
    }
    expected_rows = {
        f"{p.injection.label} at {p.source_ref}": (
            p.source_ref,
            p.injection.topic,
            str(p.injection.reason),
            p.injection.event_id,
            _bytes(p.injection.quarantined_value),
        )
        for p in poisoned
    }
    assert found_rows == expected_rows, _diff(found_rows, expected_rows)


def assert_quarantine_keys(database: Path, poisoned: list[Produced]) -> None:
    """Each quarantine row keeps the message key byte for byte (rows missing altogether
    are assert_quarantine's business)."""
    keys = dict(_query(database, "SELECT source_ref, raw_key FROM quarantine"))
    wrong = {
        p.source_ref: (p.injection.label, p.injection.key, keys[p.source_ref])
        for p in poisoned
        if p.source_ref in keys and keys[p.source_ref] != p.injection.key
    }
    assert not wrong, f"quarantine rows without their key (label, produced, kept): {wrong}"


def assert_no_poison_landed(database: Path, poisoned: list[Produced]) -> None:
    refs = {p.source_ref for p in poisoned}
    landed_refs = {
        ref
        for (ref,) in _query(
            database,
            "SELECT source_ref FROM request_events UNION ALL SELECT source_ref FROM action_events "
            "UNION ALL SELECT source_ref FROM duplicate_deliveries",
        )
    }
    assert not refs & landed_refs
    # Poison that decodes carries ids of its own (px-...); conflicts reuse valid ones, and
    # the batch comparison shows the originals' content won.
    ids = {
        p.injection.event_id
        for p in poisoned
        if p.injection.event_id and p.injection.reason is not ReasonCode.EVENT_ID_CONFLICT
    }
    assert ids and all(i.startswith("px-") for i in ids)
    landed_ids = {
        i
        for (i,) in _query(
            database,
            "SELECT event_id FROM request_events UNION ALL SELECT event_id FROM action_events "
            "UNION ALL SELECT event_id FROM requests "
            "UNION ALL SELECT cause_event_id FROM lifecycle_transitions",
        )
    }
    assert not ids & landed_ids
    poison_request_ids = _query(
        database,
        "SELECT request_id FROM requests WHERE request_id LIKE 'PX%' UNION ALL "
        "SELECT request_id FROM lifecycle_transitions WHERE request_id LIKE 'PX%'",
    )
    assert poison_request_ids == []


def assert_forwarded_to_quarantine_topic(
    bootstrap: str, prefix: str, poisoned: list[Produced]
) -> None:
    """`<prefix>removal.quarantine` holds each quarantined record (deduplicated by the
    quarantine-id header): key and value byte for byte as produced, the reason in a header."""
    topic = prefix + QUARANTINE_TOPIC
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=TOPIC_MAX_BYTES,
        fetch_max_bytes=4 * TOPIC_MAX_BYTES,
    )
    forwarded: dict[str, set[tuple[bytes | None, bytes | None, str | None]]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"no topic {topic}"
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets in 60 s"
            for records in consumer.poll(timeout_ms=1_000).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or ()}
                    ident = headers.get(QUARANTINE_ID_HEADER, f"no id header at {r.offset}")
                    reason = headers.get(REASON_CODE_HEADER)
                    forwarded.setdefault(ident, set()).add((r.key, r.value, reason))
    finally:
        consumer.close()
    expected: dict[str, set[tuple[bytes | None, bytes | None, str | None]]] = {
        p.source_ref: {(p.injection.key, p.injection.quarantined_value, str(p.injection.reason))}
        for p in poisoned
    }
    label = {p.source_ref: p.injection.label for p in poisoned}

    def shown(records: set[tuple[bytes | None, bytes | None, str | None]]) -> list[Any]:
        return sorted((str(key), _bytes(value), str(reason)) for key, value, reason in records)

    found = {f"{label.get(i, 'NOT INJECTED')} at {i}": shown(r) for i, r in forwarded.items()}
    wanted = {f"{label[i]} at {i}": shown(r) for i, r in expected.items()}
    assert found == wanted, _diff(found, wanted)


# --- one live run, several verdicts ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MatrixRun:
    """What one run of the matrix produced and left behind (the job stopped by SIGTERM)."""

    bootstrap: str
    prefix: str
    database: Path
    valid: list[Injection]
    produced: list[Produced]
    batch_fingerprints: dict[str, tuple[int, str]]
    exit_code: int
    stalls: tuple[str, ...]  # waits that ran out: the job died or stopped accounting
    log_tail: str

    @property
    def poisoned(self) -> list[Produced]:
        return [p for p in self.produced if p.injection.reason is not None]


def _write_batch_input(directory: Path, valid: list[Injection], store: SchemaStore) -> list[Path]:
    directory.mkdir(parents=True)
    paths = []
    for topic in (REQUESTS_TOPIC, ACTIONS_TOPIC):
        path = directory / f"{topic}.avro"
        found = [RawMessage(m.topic, m.key, m.quarantined_value) for m in valid if m.topic == topic]
        write_raw_messages(path, found, store)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def matrix(
    kafka_bootstrap: str,
    prism_location: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> MatrixRun:
    """The live run: fresh topics, the job started, then two waves.

    First: the valid scenario with every poison class interleaved, but for future
    timestamps. Second, once all of it is accounted for and the job has caught up (its
    watermark follows the wall clock, a live job's steady state): valid events with the
    future timestamps and the event_id conflicts (whose originals landed in the first wave)
    interleaved, then valid events only. Then SIGTERM. The job must stay up and account
    for every record; where it does not, the run goes on and `stalls` says where."""
    root = tmp_path_factory.mktemp("poison-matrix")
    # The job's catalog (and the batch path's): request v3 registered, reader pinned to v2.
    site_dir = write_site_catalog(root / "schemas")
    store = SchemaStore.load(site_dir)
    rng = random.Random(20210301)
    prefix = f"poison-{uuid.uuid4().hex[:8]}."
    valid = valid_scenario(store, rng)
    earlier, later = valid[:-LATER], valid[-LATER:]
    bad = poison(store, datetime.now(UTC))
    assert {b.reason for b in bad} | {ReasonCode.EVENT_ID_CONFLICT} == set(ReasonCode) - {
        ReasonCode.INVALID_VALUE
    }
    assert min(Counter(b.reason for b in bad).values()) >= 2
    future = [b for b in bad if b.reason is ReasonCode.TIMESTAMP_IN_FUTURE]
    first_wave = interleave(earlier, [b for b in bad if b not in future], rng)
    first_seen = [m for m in earlier if m.label.startswith("valid ")]
    originals = rng.sample([m for m in first_seen if m.topic == REQUESTS_TOPIC], 2)
    originals += rng.sample([m for m in first_seen if m.topic == ACTIONS_TOPIC], 1)
    half = LATER // 2
    second_wave = interleave(later[:half], conflicts(originals, store) + future, rng)
    second_wave += later[half:]
    total = len(first_wave) + len(second_wave)

    create_topics(kafka_bootstrap, prefix)
    job = StreamingJob(
        root / "stream.duckdb",
        kafka_bootstrap,
        prefix,
        prism_location,
        root / "job.log",
        records=total,
        env={**INTAKE_ENV, "REMOVAL_AUDIT_SCHEMAS_DIR": str(site_dir)},
    )
    stalls: list[str] = []

    def wait(done: Callable[[dict[str, Any]], bool], budget_s: float) -> None:
        try:
            job.wait_for(done, budget_s)
        except AssertionError as stalled:
            stalls.append(str(stalled))

    try:
        # The batch path over the valid events alone, while Prism starts.
        batch = Settings(
            database=root / "batch.duckdb",
            data_dir=root / "valid",
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_clock_skew_seconds=MAX_CLOCK_SKEW_S,
            oldest_plausible=OLDEST_PLAUSIBLE,
            schemas_dir=site_dir,
        )
        report = run_batch(_write_batch_input(batch.data_dir, valid, store), batch)
        assert report.records_in == len(valid)
        expected = content_fingerprints(batch.database, VALID_TABLES)

        produced = produce(kafka_bootstrap, prefix, first_wave)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        wait(
            lambda s: s["accounted"] == len(first_wave) and (s["watermark"] or EPOCH) >= today,
            START_BUDGET_S,
        )
        produced += produce(kafka_bootstrap, prefix, second_wave)
        wait(lambda s: s["accounted"] == total, PHASE_BUDGET_S)
        # Late events' releases land a batch or two after the events themselves.
        wait(lambda _: _settled(job, expected), SETTLE_BUDGET_S)
        exit_code = job.terminate() if job.alive() else job.process.returncode
    finally:
        if job.alive():
            job.kill()
    return MatrixRun(
        kafka_bootstrap,
        prefix,
        job.database,
        valid,
        produced,
        expected,
        exit_code,
        tuple(stalls),
        job.tail(),
    )


def test_the_job_carries_on_through_the_poison_and_stops_cleanly(matrix: MatrixRun) -> None:
    # Alive at every poll until the snapshot accounted for every record produced (the
    # valid events after the poison included), then exit 0 on SIGTERM.
    problems = list(matrix.stalls)
    if matrix.exit_code != 0:
        problems.append(f"exit code {matrix.exit_code} on SIGTERM:\n{matrix.log_tail}")
    ends = end_offsets(matrix.bootstrap, matrix.prefix)
    assert sum(ends.values()) == len(matrix.produced)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def test_each_class_is_quarantined_with_its_reason_bytes_and_offset(matrix: MatrixRun) -> None:
    assert_quarantine(matrix.database, matrix.poisoned)


def test_no_poison_lands_and_the_valid_events_land_as_in_batch(matrix: MatrixRun) -> None:
    assert_no_poison_landed(matrix.database, matrix.poisoned)
    assert content_fingerprints(matrix.database, VALID_TABLES) == matrix.batch_fingerprints


def test_a_newer_writer_lands_through_the_pinned_reader(matrix: MatrixRun) -> None:
    v3 = {
        p.source_ref: p.injection.label
        for p in matrix.produced
        if p.injection.label.startswith("valid ") and "(v3 " in p.injection.label
    }
    assert all(any(f"(v3 {f})" in label for label in v3.values()) for f in V3_FRAMINGS), v3
    versions = dict(
        _query(matrix.database, "SELECT source_ref, schema_version FROM request_events")
    )
    found = {f"{label} at {ref}": versions.get(ref) for ref, label in v3.items()}
    assert found == {f"{label} at {ref}": 3 for ref, label in v3.items()}


def test_every_offset_is_landed_a_duplicate_or_quarantined(matrix: MatrixRun) -> None:
    ends = end_offsets(matrix.bootstrap, matrix.prefix)
    assert landed_runs(matrix.database) == {k: [(0, end - 1)] for k, end in ends.items() if end}
    records = len(matrix.produced)
    duplicates = len(matrix.valid) - len({m.quarantined_value for m in matrix.valid})
    quarantined = len(matrix.poisoned)
    assert _query(matrix.database, "SELECT * FROM stream_account") == [
        (records, records - duplicates - quarantined, duplicates, quarantined, True)
    ]


def test_each_repeat_is_a_duplicate_of_its_original(matrix: MatrixRun) -> None:
    # Each repeat follows its original on the same key, so at a higher offset of the same
    # partition: the original lands (the lowest position, as in the batch path) whichever
    # copy the job meets first, and the repeat is the duplicate naming it.
    originals = {
        p.injection.label: p.source_ref
        for p in matrix.produced
        if p.injection.label.startswith("valid ")
    }
    expected = {
        f"{p.injection.label} at {p.source_ref}": originals[p.injection.label.split(" of ", 1)[1]]
        for p in matrix.produced
        if p.injection.label.startswith("repeat ")
    }
    label = {p.source_ref: p.injection.label for p in matrix.produced}
    found = {
        f"{label.get(ref, 'NOT INJECTED')} at {ref}": kept
        for ref, kept in _query(
            matrix.database, "SELECT source_ref, kept_source_ref FROM duplicate_deliveries"
        )
    }
    assert found == expected, _diff(found, expected)


def test_quarantine_rows_keep_the_message_key(matrix: MatrixRun) -> None:
    assert_quarantine_keys(matrix.database, matrix.poisoned)


def test_quarantined_records_are_forwarded_to_the_quarantine_topic(matrix: MatrixRun) -> None:
    assert_forwarded_to_quarantine_topic(matrix.bootstrap, matrix.prefix, matrix.poisoned)

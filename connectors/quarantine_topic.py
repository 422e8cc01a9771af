"""Quarantine on Kafka: every quarantined record, byte for byte, on the topic
`<prefix>removal.quarantine`, and the settings and headers replays share.

DuckDB's `quarantine` table is the record of truth. The topic is a copy for consumers that
alert on refused records or repair them without reading DuckDB. `QuarantineForwarder` is a
transactional outbox over that table: it produces the quarantine rows that
`quarantine_forwarded` does not hold yet, waits for the broker's acknowledgements (acks=all,
idempotent producer), then records where each was written, all in one DuckDB transaction.

Delivery is at least once. A crash (or a failed DuckDB commit) after the acknowledgements
and before the record re-sends those rows on the next call, so the topic can hold one
quarantine row twice: consumers dedupe by the `removal-audit.quarantine-id` header (the
quarantine_id, i.e. the source position, unique per refused record). Nothing is skipped: a
row counts as forwarded only once the broker acknowledged it. The one exception is a row
larger than the topic's message limit (max.message.bytes): it is recorded with its refusal
and no position, stays in DuckDB only, is not retried, and the log says which topic config to
raise. A topic this module creates never refuses one (see below).

One record per quarantine row:
    key      the original record key (quarantine.raw_key; none when it had none)
    value    the original bytes (quarantine.raw_value), byte for byte
    headers  (values UTF-8)
        removal-audit.quarantine-id  "demo.removal.requests/2#17"  quarantine.quarantine_id
        removal-audit.reason-code    "TRUNCATED"                   connectors.errors.ReasonCode
        removal-audit.message        "payload ends at byte 9..."   for humans
        removal-audit.source-topic   "removal.requests"            logical topic (quarantine.topic)
        removal-audit.source-ref     "demo.removal.requests/2#17"  Kafka topic/partition#offset,
                                                                   or file#position
        removal-audit.event-id       "rq-5"                        only when it could be read

Like `removal-audit publish`, which creates the topics it writes, the forwarder creates its
topic when missing (3 partitions, replication factor 1 by default; create it beforehand to
choose otherwise); the streaming source, a reader, refuses missing topics instead.

Whatever a source topic accepted, the quarantine topic accepts too: the forwarder creates it
with max.message.bytes = the largest max.message.bytes of the source topics
(`settings.source_topics`; the broker's default where a topic sets none) + HEADER_ROOM_BYTES
for the headers. A topic that exists keeps its own limit (raising it is the operator's call):
the forwarder reads it, sizes its producer to it, and warns at start when it is smaller than
the source topics need. The limits are read once per producer (first use, and after a
failure), not per call.

Replays back to the source topics: `connectors.quarantine_replay`; producing and topic
limits: `connectors.kafka_produce`.

Example (the streaming writer thread, after each landing):
    forwarder = QuarantineForwarder(QuarantineTopicSettings.from_source(source))
    forwarder.forward(con)   # -> rows forwarded; 0 and a count(*) when nothing is new
    forwarder.close()
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)

from connectors.kafka_produce import (
    CONNECTION_OPTIONS,
    DEFAULT_REQUEST_BYTES,
    MAX_MESSAGE_BYTES,
    PERMANENT_ERRORS,
    Outgoing,
    Written,
    max_message_bytes,
    produce,
    record_bytes,
)

if TYPE_CHECKING:
    from connectors.kafka_source import KafkaSourceSettings

log = logging.getLogger(__name__)

QUARANTINE_TOPIC = "removal.quarantine"

HEADER_QUARANTINE_ID = "removal-audit.quarantine-id"
HEADER_REASON_CODE = "removal-audit.reason-code"
HEADER_MESSAGE = "removal-audit.message"
HEADER_SOURCE_TOPIC = "removal-audit.source-topic"
HEADER_SOURCE_REF = "removal-audit.source-ref"
HEADER_EVENT_ID = "removal-audit.event-id"
HEADER_REPLAY_OF = "removal-audit.replay-of"

# A quarantine record is a source record plus the removal-audit.* headers: two positions, a
# reason and its message, a topic name, an event id; a few hundred bytes in practice. The
# topic this creates takes this much more than the largest source topic does.
HEADER_ROOM_BYTES = 64 * 1024
# Rows not forwarded yet, in source order (source, then numeric position).
_PENDING_SQL = """
SELECT q.quarantine_id, q.topic, q.source_ref, q.reason_code, q.message, q.event_id,
       q.raw_key, q.raw_value
FROM quarantine AS q ANTI JOIN quarantine_forwarded AS f USING (quarantine_id)
ORDER BY regexp_extract(q.source_ref, '^(.*)#', 1),
         TRY_CAST(regexp_extract(q.source_ref, '#([0-9]+)$', 1) AS BIGINT),
         q.quarantine_id
LIMIT ?
"""

_RECORD_SQL = """
INSERT OR IGNORE INTO quarantine_forwarded
SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::BIGINT[]),
       ?::TIMESTAMPTZ, unnest(?::VARCHAR[])
"""


class QuarantineTopicError(RuntimeError):
    """The broker did not take every record (or a replay's topic is missing)."""


@dataclass(frozen=True)
class QuarantineTopicSettings:
    """Where and how to produce. Example: QuarantineTopicSettings("127.0.0.1:19092",
    topic_prefix="demo.") writes to "demo.removal.quarantine".

    `security`: kafka-python's security options as they are (security_protocol, sasl_*,
    ssl_*), left out of repr; `from_source` and `from_settings` fill them. `source_topics`:
    the Kafka topics (prefix included) whose records get quarantined; the topic this creates
    takes records as large as the largest of them does (`from_source` fills them; none: the
    broker's default limit). `max_records`: at most this many rows per `forward` call, so a
    large backlog (the first run over an old database) is forwarded over several calls
    rather than holding the writer for long.
    """

    bootstrap_servers: str
    topic_prefix: str = ""
    security: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    source_topics: tuple[str, ...] = ()
    partitions: int = 3  # for the topic this creates
    replication_factor: int = 1
    client_id: str = "removal-audit-quarantine"
    timeout_s: float = 60.0
    max_records: int = 10_000

    def __post_init__(self) -> None:
        unknown = set(self.security) - set(CONNECTION_OPTIONS)
        if unknown:
            raise ValueError(f"not a connection option: {', '.join(sorted(unknown))}")
        # A private copy: the settings travel pickled to workers and must not change under them.
        object.__setattr__(self, "security", dict(self.security))
        if isinstance(self.source_topics, str):
            raise ValueError("source_topics is a sequence of topic names, not one name")
        object.__setattr__(self, "source_topics", tuple(self.source_topics))
        if self.timeout_s <= 0 or self.max_records <= 0:
            raise ValueError("timeout_s and max_records must be > 0")

    @classmethod
    def from_source(cls, source: KafkaSourceSettings, **overrides: Any) -> QuarantineTopicSettings:
        """The streaming source's broker, prefix, security options and topics."""
        config = source.consumer_config()
        given: dict[str, Any] = {
            "bootstrap_servers": source.bootstrap_servers,
            "topic_prefix": source.topic_prefix,
            "security": {k: config[k] for k in CONNECTION_OPTIONS if k in config},
            "source_topics": tuple(source.topic_prefix + t for t in source.topics),
        }
        return cls(**{**given, **overrides})

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> QuarantineTopicSettings:
        """From the project's `pipelines.settings.Settings` (as `source_settings` reads it);
        no source topics: for replays, which create no topic."""

        def secret(value: Any) -> str | None:
            return None if value is None else str(value.get_secret_value())

        security = {
            "security_protocol": settings.kafka_security_protocol,
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": secret(settings.kafka_sasl_password),
            "ssl_cafile": settings.kafka_ssl_cafile,
            "ssl_certfile": settings.kafka_ssl_certfile,
            "ssl_keyfile": settings.kafka_ssl_keyfile,
            "ssl_password": secret(settings.kafka_ssl_password),
        }
        given: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            "topic_prefix": settings.kafka_topic_prefix,
            "security": {k: v for k, v in security.items() if v is not None},
        }
        return cls(**{**given, **overrides})

    @property
    def topic(self) -> str:
        return self.topic_prefix + QUARANTINE_TOPIC

    def admin_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": int(self.timeout_s * 1000),
            **self.security,
        }

    def producer_config(self, max_request_size: int = DEFAULT_REQUEST_BYTES) -> dict[str, Any]:
        """`max_request_size`: the largest record (batch) it sends; the topic's limit."""
        delivery_ms = int(self.timeout_s * 1000)
        return {
            **self.admin_config(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            # Records come alone in their batch once larger than batch_size (16 KiB), so the
            # topic's max.message.bytes is also the largest request worth sending.
            "max_request_size": max_request_size,
            # A send gives up within timeout_s, so flush() sees every outcome.
            "delivery_timeout_ms": delivery_ms,
            "request_timeout_ms": max(1_000, delivery_ms // 2),
            "max_block_ms": delivery_ms,
            # A missing topic is created on purpose (the forwarder) or refused (a replay).
            "allow_auto_create_topics": False,
        }


def quarantine_headers(row: Mapping[str, Any]) -> tuple[tuple[str, bytes], ...]:
    """The headers of a quarantine row (a dict with the `quarantine` table's columns)."""
    headers = [
        (HEADER_QUARANTINE_ID, row["quarantine_id"]),
        (HEADER_REASON_CODE, row["reason_code"]),
        (HEADER_MESSAGE, row["message"]),
        (HEADER_SOURCE_TOPIC, row["topic"]),
        (HEADER_SOURCE_REF, row["source_ref"]),
    ]
    if row.get("event_id") is not None:
        headers.append((HEADER_EVENT_ID, row["event_id"]))
    return tuple((name, str(value).encode()) for name, value in headers)


@dataclass(frozen=True, slots=True)
class TopicLimit:
    """What the quarantine topic takes. `max_bytes`: its max.message.bytes (None: the broker
    did not say). `needed`: the largest source topic's + HEADER_ROOM_BYTES (None: no source
    topic known). Example: TopicLimit(4_259_840, needed=4_259_840)."""

    max_bytes: int | None
    needed: int | None

    @property
    def request_bytes(self) -> int:
        """The producer's max_request_size: the topic's limit; unknown, what the sources need
        (the broker then refuses what does not fit)."""
        return self.max_bytes or self.needed or DEFAULT_REQUEST_BYTES


def ensure_topic(settings: QuarantineTopicSettings) -> TopicLimit:
    """Create `settings.topic` unless it exists, sized for the source topics; return what it
    takes. Warns when an existing topic takes less than the source topics do."""
    admin = KafkaAdminClient(**settings.admin_config())
    try:
        sources = max_message_bytes(admin, list(dict.fromkeys(settings.source_topics)))
        unknown = sorted(set(settings.source_topics) - set(sources))
        if unknown:
            log.warning(
                "cannot read max.message.bytes of %s (missing, or no DescribeConfigs "
                "permission): %s is sized without them",
                *(", ".join(unknown), settings.topic),
            )
        needed = max(sources.values()) + HEADER_ROOM_BYTES if sources else None
        created = False
        if settings.topic not in set(admin.list_topics()):
            options: dict[str, Any] = {
                "num_partitions": settings.partitions,
                "replication_factor": settings.replication_factor,
            }
            if needed is not None:
                options["configs"] = {MAX_MESSAGE_BYTES: str(needed)}
            # Created meanwhile by another writer: what we wanted (its limit is read below).
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics({settings.topic: options})
                created = True
                log.info("created topic %s (%s=%s)", settings.topic, MAX_MESSAGE_BYTES, needed)
        max_bytes = max_message_bytes(admin, [settings.topic]).get(settings.topic)
        if max_bytes is None and created:
            max_bytes = needed  # not described yet (metadata lag): what it was created with
    finally:
        admin.close()
    if max_bytes is not None and needed is not None and max_bytes < needed:
        largest = max(sources, key=lambda topic: sources[topic])
        log.warning(
            "%s takes records up to %d bytes (%s) but %s takes %d: larger quarantined records "
            "will stay in DuckDB only; raise %s of %s to %d to forward every one",
            *(settings.topic, max_bytes, MAX_MESSAGE_BYTES, largest, sources[largest]),
            *(MAX_MESSAGE_BYTES, settings.topic, needed),
        )
    return TopicLimit(max_bytes, needed)


class QuarantineForwarder:
    """Forwards new quarantine rows to the quarantine topic (see the module docstring).

    Create it once and reuse it: the producer is created on first use and kept; a pickled
    forwarder travels without it (the writer's config goes to Beam workers). Use it from
    one thread at a time, with the writer's connection, outside any open transaction.
    """

    def __init__(self, settings: QuarantineTopicSettings) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._limit: TopicLimit | None = None  # read with each new producer
        # count(*) of quarantine when the last call left nothing to forward. In the writer's
        # process the table only grows (landings insert new ids, replace rows by id), so an
        # unchanged count means nothing new and the anti-join can be skipped: a count(*)
        # costs ~1 ms where the anti-join over a million rows costs ~150 ms.
        self._settled_count: int | None = None

    def forward(self, con: duckdb.DuckDBPyConnection) -> int:
        """Produce every quarantine row of `con` that quarantine_forwarded lacks (at most
        settings.max_records per call), wait for the acknowledgements, record them in one
        transaction; return how many were forwarded. Raises QuarantineTopicError when some
        were not acknowledged: the others are recorded first, the rest go with the next call.
        """
        count = _scalar(con, "SELECT count(*) FROM quarantine")
        if count == self._settled_count:
            return 0
        cursor = con.execute(_PENDING_SQL, [self.settings.max_records])
        columns = [d[0] for d in cursor.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        if not rows:
            self._settled_count = count
            return 0
        outgoing = [
            Outgoing(
                row["quarantine_id"],
                self.settings.topic,
                row["raw_key"],
                row["raw_value"],
                quarantine_headers(row),
            )
            for row in rows
        ]
        try:
            producer, limit = self._ready_producer()
        except KafkaError as error:  # no broker, no topic: all rows go with the next call
            raise QuarantineTopicError(
                f"cannot produce to {self.settings.topic}: {error!r}"
            ) from error
        too_large = [_too_large(o, limit) for o in outgoing]
        written = [w for w in too_large if w is not None]
        sendable = [o for o, w in zip(outgoing, too_large, strict=True) if w is None]
        written += produce(producer, sendable, self.settings.timeout_s)
        acked = [w for w in written if w.error is None]
        refused = [w for w in written if isinstance(w.error, PERMANENT_ERRORS)]
        failed = [
            w for w in written if w.error is not None and not isinstance(w.error, PERMANENT_ERRORS)
        ]
        self._record(con, acked, refused)
        for w in refused:
            log.error("quarantine row %s stays in DuckDB only: %s", w.quarantine_id, w.error)
        if failed:
            self._discard_producer()  # in an unknown state: the retry gets a new one
            raise QuarantineTopicError(
                f"{len(failed)} of {len(written)} quarantine records were not acknowledged "
                f"by {self.settings.topic} (retried by the next call); first: {failed[0].error!r}"
            )
        if len(rows) < self.settings.max_records:
            self._settled_count = count
        return len(acked)

    def close(self) -> None:
        self._discard_producer()

    def __getstate__(self) -> dict[str, Any]:
        # Travels pickled to the workers: without its connection or what it learnt there.
        return {**self.__dict__, "_producer": None, "_limit": None, "_settled_count": None}

    def _ready_producer(self) -> tuple[KafkaProducer, TopicLimit]:
        if self._producer is None or self._limit is None:
            # Once per producer: a limit raised meanwhile is seen after a restart or a failure.
            self._discard_producer()
            self._limit = ensure_topic(self.settings)
            config = self.settings.producer_config(max_request_size=self._limit.request_bytes)
            self._producer = KafkaProducer(**config)
        return self._producer, self._limit

    def _discard_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            producer.close(timeout=self.settings.timeout_s)

    @staticmethod
    def _record(
        con: duckdb.DuckDBPyConnection, acked: Sequence[Written], refused: Sequence[Written]
    ) -> None:
        done = [*acked, *refused]
        if not done:
            return
        con.begin()
        try:
            con.execute(
                _RECORD_SQL,
                [
                    [w.quarantine_id for w in done],
                    [w.topic for w in done],
                    [w.partition for w in done],
                    [w.offset for w in done],
                    datetime.now(UTC),
                    [None if w.error is None else repr(w.error) for w in done],
                ],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise


def _too_large(record: Outgoing, limit: TopicLimit) -> Written | None:
    """A refusal when `record` is larger than the producer may send (the topic's limit, when
    known), saying which topic config to raise: the producer's own refusal would name its
    max_request_size, which no operator sets."""
    size = record_bytes(record)
    if size <= limit.request_bytes:
        return None
    if limit.max_bytes is None:
        why = (
            f"the {limit.request_bytes} bytes this producer sends to {record.topic} while its "
            f"{MAX_MESSAGE_BYTES} cannot be read (allow DescribeConfigs on it)"
        )
    else:
        why = (
            f"{record.topic} takes ({MAX_MESSAGE_BYTES}={limit.max_bytes}); raise "
            f"{MAX_MESSAGE_BYTES} of {record.topic} to at least {max(size, limit.needed or 0)} "
            "to forward such records"
        )
    error = MessageSizeTooLargeError(f"{size} bytes with its headers, more than {why}")
    return Written(record.quarantine_id, record.topic, None, None, error)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    # fetchall, not fetchone: a half-read result would block the writer's next statement.
    ((value,),) = con.execute(sql).fetchall()
    return int(value)

"""Quarantined records reviewed again: read them from the quarantine table, judge them
with today's schema catalog and intake rules, plan which go back to which topic
(`removal-audit quarantine`, `pipelines.quarantine_cli`, prints and sends them).

"Now accepted" means intake accepts the bytes and their event_id is not landed yet: a record
whose event_id already landed (e.g. an EVENT_ID_CONFLICT) would only be counted again as a
duplicate delivery or quarantined again, so it is ALREADY_LANDED and not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from connectors.avro_files import RawMessage
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.intake import IntakeRules, Quarantined, take_in
from pipelines.model import RequestEvent

ACCEPTED = "ACCEPTED"
ALREADY_LANDED = "ALREADY_LANDED"

_COLUMNS = (
    "quarantine_id",
    "topic",
    "source_ref",
    "reason_code",
    "message",
    "event_id",
    "raw_key",
    "raw_value",
)
# Source order: the source (topic/partition or file), then the numeric position.
_SOURCE_ORDER = (
    "regexp_extract(source_ref, '^(.*)#', 1), "
    "TRY_CAST(regexp_extract(source_ref, '#([0-9]+)$', 1) AS BIGINT), quarantine_id"
)


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """One row of the `quarantine` table, and where the forwarder put it (None: not yet,
    or no quarantine_forwarded table in this database)."""

    quarantine_id: str
    topic: str
    source_ref: str
    reason_code: str
    message: str
    event_id: str | None
    raw_key: bytes | None
    raw_value: bytes
    forwarded: str | None = None

    @property
    def kafka_topic(self) -> str | None:
        """The Kafka topic it was read from (prefix included), None when from a file."""
        source = SourceRef.parse(self.source_ref).source
        topic, slash, partition = source.rpartition("/")
        return topic if slash and partition.isdigit() else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What intake says about a record now. `code`: ACCEPTED, ALREADY_LANDED or a ReasonCode.

    Example: Verdict(accepted=True, code="ACCEPTED", detail="request event rq-5, schema v2")
    """

    accepted: bool
    code: str
    detail: str


def judge(
    record: QuarantineRecord,
    store: SchemaStore,
    rules: IntakeRules,
    con: duckdb.DuckDBPyConnection,
) -> Verdict:
    """Run intake over the record's bytes with today's catalog and rules; an accepted event
    whose event_id is already landed is ALREADY_LANDED (a replay would add nothing)."""
    raw = RawMessage(record.topic, record.raw_key, record.raw_value, None)
    outcome = take_in(raw, SourceRef.parse(record.source_ref), store, rules)
    if isinstance(outcome, Quarantined):
        return Verdict(False, outcome.reason.value, outcome.message)
    event = outcome.event
    kind, table = (
        ("request", "request_events")
        if isinstance(event, RequestEvent)
        else ("action", "action_events")
    )
    # fetchall throughout: a half-read result blocks the connection's next statement.
    landed = con.execute(
        f"SELECT source_ref FROM {table} WHERE event_id = ? ORDER BY source_ref LIMIT 1",
        [event.event_id],
    ).fetchall()
    if landed:
        return Verdict(
            False,
            ALREADY_LANDED,
            f"{kind} event {event.event_id} is already landed (from {landed[0][0]}): a replay "
            "would be counted as a duplicate delivery or quarantined as EVENT_ID_CONFLICT",
        )
    return Verdict(
        True, ACCEPTED, f"{kind} event {event.event_id}, schema v{outcome.schema_version}"
    )


def read_records(
    con: duckdb.DuckDBPyConnection,
    *,
    ids: Sequence[str] = (),
    reasons: Sequence[str] = (),
) -> list[QuarantineRecord]:
    """Quarantine rows in source order, only `ids` and `reasons` when given (both: either)."""
    where, params = [], []
    if ids:
        where.append("quarantine_id IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(ids))
    if reasons:
        where.append("reason_code IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(reasons))
    forwarded = (
        "(SELECT coalesce(f.topic || '/' || f.kafka_partition || '#' || f.kafka_offset, "
        "'refused: ' || f.refused) FROM quarantine_forwarded AS f "
        "WHERE f.quarantine_id = q.quarantine_id)"
        if has_table(con, "quarantine_forwarded")
        else "NULL"
    )
    rows = con.execute(
        f"SELECT {', '.join(_COLUMNS)}, {forwarded} FROM quarantine AS q "
        + (f"WHERE {' OR '.join(where)} " if where else "")
        + f"ORDER BY {_SOURCE_ORDER}",
        params,
    ).fetchall()
    return [QuarantineRecord(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Planned:
    record: QuarantineRecord
    verdict: Verdict
    target: str | None  # the Kafka topic it goes to; None: not sent
    note: str


def plan_replay(
    records: Sequence[QuarantineRecord],
    verdict_of: Callable[[QuarantineRecord], Verdict],
    prefix: str,
    include_files: bool,
) -> list[Planned]:
    planned = []
    for record in records:
        verdict = verdict_of(record)
        target: str | None = prefix + record.topic
        note = verdict.detail
        source = record.kafka_topic
        if not verdict.accepted:
            target = None
        elif source is None and not include_files:
            note += f"; from a file: --include-files sends it to {prefix + record.topic}"
            target = None
        elif source is not None and source != target:
            note += f"; read from {source}"
        planned.append(Planned(record, verdict, target, note))
    return planned


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    ((found,),) = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [name]
    ).fetchall()
    return bool(found)

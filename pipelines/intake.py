"""Intake: one raw message in, one typed event or one quarantine record out.

Shared by every source (Avro files now, Kafka later): decode with the schema catalog, then
check the domain rules the schema cannot express. Nothing raises for bad input; the
caller gets a `Quarantined` with a reason code and the exact bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connectors.avro_codec import decode
from connectors.avro_files import RawMessage
from connectors.errors import DecodeError, ReasonCode
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.model import ActionEvent, ActionType, RequestEvent, RequestEventType
from pipelines.pickling import compact_pickle

if TYPE_CHECKING:
    from pipelines.settings import Settings

REQUESTS_TOPIC = "removal.requests"
ACTIONS_TOPIC = "removal.actions"
SUBJECTS = {REQUESTS_TOPIC: "removal.requests-value", ACTIONS_TOPIC: "removal.actions-value"}


@compact_pickle
@dataclass(frozen=True, slots=True)
class Accepted:
    """A message intake took in: the typed event, where it was read, its writer schema
    version, and the message's value (`payload`) and key as they arrived, so that a later
    refusal of this delivery (EVENT_ID_CONFLICT, at dedupe) keeps the exact bytes.

    An event rebuilt from DuckDB after a restart (`streaming.landed_event`) has neither:
    the event tables keep no bytes, so its payload is b"" and its key None. Such a copy is
    never quarantined: dedupe gives it up only to an identical copy at a lower source
    position, and then it is a duplicate row.
    Example: Accepted(RequestEvent(...), SourceRef("removal.requests/0", 17), 2,
    b"\xc3\x01...", b"twitter/1")"""

    event: RequestEvent | ActionEvent
    origin: SourceRef
    schema_version: int
    payload: bytes
    key: bytes | None


@compact_pickle
@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused message, kept whole. Example: Quarantined(origin=SourceRef("requests.avro",
    17), topic="removal.requests", reason=TRUNCATED, message="...", key=b"twitter/1",
    value=b"\\xc3\\x01...", event_id=None)"""

    origin: SourceRef
    topic: str
    reason: ReasonCode
    message: str
    key: bytes | None
    value: bytes
    event_id: str | None = None


@dataclass(frozen=True)
class IntakeRules:
    """The domain checks on event times; `now` is the reference for 'in the future' (None:
    the wall clock at each check, for a pipeline that runs for days)."""

    now: datetime | None
    max_clock_skew_seconds: int
    oldest_plausible: datetime
    max_message_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime | None = None) -> IntakeRules:
        """The deployment's rules; `now` as above."""
        return cls(
            now=now,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
            oldest_plausible=settings.oldest_plausible,
            max_message_bytes=settings.max_message_bytes,
        )


_REQUIRED_TEXT = {
    REQUESTS_TOPIC: (
        "event_id",
        "request_id",
        "authority",
        "jurisdiction",
        "platform",
        "content_id",
    ),
    ACTIONS_TOPIC: ("event_id", "action_id", "platform", "content_id"),
}


def take_in(
    message: RawMessage, origin: SourceRef, store: SchemaStore, rules: IntakeRules
) -> Accepted | Quarantined:
    """Decode and check one message."""
    event_id: str | None = None

    def refuse(reason: ReasonCode, text: str) -> Quarantined:
        return Quarantined(
            origin, message.topic, reason, text, message.key, message.value, event_id
        )

    subject = SUBJECTS.get(message.topic)
    if subject is None:
        return refuse(ReasonCode.INVALID_VALUE, f"unknown topic {message.topic!r}")
    try:
        decoded = decode(message.value, subject, store, max_bytes=rules.max_message_bytes)
    except DecodeError as error:
        return refuse(error.reason, error.message)
    record = decoded.record
    event_id = record.get("event_id") or None
    for field in _REQUIRED_TEXT[message.topic]:
        if not str(record.get(field) or "").strip():
            return refuse(ReasonCode.MISSING_REQUIRED_FIELD, f"{field} is empty")

    event: RequestEvent | ActionEvent
    try:
        event = (RequestEvent if message.topic == REQUESTS_TOPIC else ActionEvent).from_avro(record)
    except ValueError as error:
        # A site catalog whose reader schema has a symbol the model lacks (a newer version
        # left unpinned, see schemas/catalog.json): refused like any unreadable symbol.
        return refuse(
            ReasonCode.UNKNOWN_ENUM_SYMBOL,
            f"{error} (reader {store.reader(subject).label}; pin the version this "
            "pipeline reads in catalog.json's readers)",
        )
    if isinstance(event, RequestEvent):
        if event.event_type is RequestEventType.WITHDRAWN and event.withdrawn_at is None:
            return refuse(ReasonCode.MISSING_REQUIRED_FIELD, "WITHDRAWN event without withdrawn_at")
        times = {"issued_at": event.issued_at, "withdrawn_at": event.withdrawn_at}
    else:
        if event.action is ActionType.RESTRICTED and not event.jurisdiction:
            return refuse(
                ReasonCode.MISSING_REQUIRED_FIELD, "RESTRICTED action without jurisdiction"
            )
        times = {"acted_at": event.acted_at}

    for name, value in times.items():
        if value is None:
            continue
        if value < rules.oldest_plausible:
            return refuse(
                ReasonCode.TIMESTAMP_TOO_OLD,
                f"{name} {value.isoformat()} is before {rules.oldest_plausible.isoformat()}",
            )
        now = rules.now or datetime.now(UTC)
        if (value - now).total_seconds() > rules.max_clock_skew_seconds:
            return refuse(
                ReasonCode.TIMESTAMP_IN_FUTURE,
                f"{name} {value.isoformat()} is ahead of {now.isoformat()} "
                f"by more than {rules.max_clock_skew_seconds} s",
            )
    return Accepted(event, origin, decoded.writer.version, message.value, message.key)

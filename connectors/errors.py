"""Typed failures of incoming messages.

Every message the pipeline cannot accept is quarantined with one `ReasonCode`, so the
dead-letter table can be counted and alerted on by reason rather than by free text.
`DecodeError` is what the connectors raise; later stages reuse the same codes.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a message was rejected (value = name, stable: stored in the dead-letter table)."""

    # The payload ends before its framing header or its Avro body is complete.
    TRUNCATED = "TRUNCATED"
    # The Avro body decoded completely but bytes are left over after it.
    TRAILING_BYTES = "TRAILING_BYTES"
    # Single-object encoding whose schema fingerprint is not in the schema catalog.
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    # Confluent wire format whose registry schema id is not in the schema catalog.
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    # The first bytes match neither single-object encoding nor the Confluent wire format.
    UNKNOWN_ENCODING = "UNKNOWN_ENCODING"
    # The writer schema cannot be resolved to the topic's reader schema (or is another subject's).
    INCOMPATIBLE_SCHEMA = "INCOMPATIBLE_SCHEMA"
    # An enum symbol the writer knows but the reader schema does not (and has no default for).
    UNKNOWN_ENUM_SYMBOL = "UNKNOWN_ENUM_SYMBOL"
    # The Avro body is corrupt: bad length, union or enum index, invalid UTF-8, overlong varint...
    MALFORMED_BODY = "MALFORMED_BODY"
    # A field the pipeline needs is absent or null.
    MISSING_REQUIRED_FIELD = "MISSING_REQUIRED_FIELD"
    # The event time lies further in the future than the allowed clock skew.
    TIMESTAMP_IN_FUTURE = "TIMESTAMP_IN_FUTURE"
    # The event time lies before the oldest time the pipeline accepts.
    TIMESTAMP_TOO_OLD = "TIMESTAMP_TOO_OLD"
    # The payload is larger than the configured maximum message size.
    OVERSIZE = "OVERSIZE"
    # A field decoded fine but its value breaks a domain rule (e.g. an unknown jurisdiction).
    INVALID_VALUE = "INVALID_VALUE"
    # Two deliveries share an event_id but differ in content.
    EVENT_ID_CONFLICT = "EVENT_ID_CONFLICT"


class DecodeError(Exception):
    """A message rejected for `reason`; `message` says what was wrong, for humans.

    str(error) is "REASON: message".
    """

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"

    def __repr__(self) -> str:
        return f"DecodeError({self.reason.value!r}, {self.message!r})"


class KafkaSourceError(RuntimeError):
    """The topics or offsets do not allow the read (missing topic, offset past the log end)."""

"""Fuzzing material shared by the codec tests, the intake tests and the atheris harness
(tests/fuzz/fuzz_intake.py).

- hypothesis strategies for records and payloads valid for any writer schema of a store;
- `Mutation`s that damage a valid payload the ways transport and buggy producers do (bit
  flips, truncation, insertion, appended bytes, spliced records, valid framing over a
  garbage body), drawn by hypothesis or by a plain `random.Random`;
- `check_intake`, what any `take_in` verdict must satisfy, with `body_end` (fastavro's
  reader, not the codec's strict scanner) as a second opinion on where a record ends.
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from fastavro import schemaless_reader
from hypothesis import strategies as st

from connectors.avro_codec import (
    CONFLUENT_ID_SIZE,
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    Decoded,
    decode,
    encode_confluent,
    encode_single_object,
)
from connectors.avro_files import RawMessage
from connectors.errors import DecodeError, ReasonCode
from connectors.origin import SourceRef
from connectors.schema_store import FINGERPRINT_SIZE, SchemaStore, SchemaVersion
from pipelines.intake import (
    REQUESTS_TOPIC,
    SUBJECTS,
    Accepted,
    IntakeRules,
    Quarantined,
)
from pipelines.model import ActionEvent, ActionType, RequestEvent, RequestEventType

# --- hypothesis strategies from a parsed schema ----------------------------------------

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
MILLIS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


def strategy_for(schema: Any, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Values valid for a fastavro-parsed `schema`; `named` collects named types."""
    if isinstance(schema, list):
        return st.one_of(*[strategy_for(branch, named) for branch in schema])
    if isinstance(schema, str):
        if schema not in _PRIMITIVES:
            return st.deferred(lambda: named[schema])
        schema = {"type": schema}
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return MILLIS
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "bytes": st.binary(max_size=30),
        "string": TEXT,
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        named[schema["name"]] = st.sampled_from(schema["symbols"])
    elif kind == "fixed":
        named[schema["name"]] = st.binary(min_size=schema["size"], max_size=schema["size"])
    elif kind == "array":
        return st.lists(strategy_for(schema["items"], named), max_size=4)
    elif kind == "map":
        return st.dictionaries(TEXT, strategy_for(schema["values"], named), max_size=4)
    elif kind == "record":
        holder: dict[str, st.SearchStrategy[Any]] = {}
        named[schema["name"]] = st.deferred(lambda: holder["record"])
        holder["record"] = st.fixed_dictionaries(
            {f["name"]: strategy_for(f["type"], named) for f in schema["fields"]}
        )
    return named[schema["name"]]


def records_for(sv: SchemaVersion) -> st.SearchStrategy[dict[str, Any]]:
    return strategy_for(sv.schema, {})


FRAMINGS = {"single-object": encode_single_object, "confluent": encode_confluent}


def writers_of(
    store: SchemaStore, subjects: tuple[str, ...] | None = None
) -> list[tuple[SchemaVersion, str]]:
    """(writer version, framing) for every version of `subjects` (default: all) and every
    framing it can be written in (Confluent needs a registry id)."""
    return [
        (sv, framing)
        for subject in (store.subjects() if subjects is None else subjects)
        for sv in store.versions(subject)
        for framing in FRAMINGS
        if framing == "single-object" or sv.registry_id is not None
    ]


@st.composite
def payloads_of(
    draw: st.DrawFn, store: SchemaStore, writers: list[tuple[SchemaVersion, str]]
) -> tuple[SchemaVersion, bytes]:
    """(writer, payload): a generated record of one of `writers`, framed."""
    sv, framing = draw(st.sampled_from(writers))
    record = draw(records_for(sv))
    return sv, FRAMINGS[framing](record, sv.subject, store, sv.version)


# --- mutations of valid payloads -------------------------------------------------------

# Every way a payload gets damaged here. "append" and "concat" (two records back to back)
# leave a whole valid record followed by extra bytes.
MUTATION_OPS = (
    "flip_bit",
    "truncate",
    "insert",
    "delete",
    "overwrite",
    "append",
    "concat",
    "splice",
    "garbage_body",
)
APPENDING_OPS = frozenset({"append", "concat"})


class Mutation(NamedTuple):
    """One edit of a payload. Positions are taken modulo the payload's length, so any
    mutation applies to any non-empty payload. Example: Mutation("flip_bit", at=12,
    aux=3, data=b"\\x00") flips bit 3 of byte 12 % len(payload)."""

    op: str
    at: int
    aux: int
    data: bytes  # never empty


def header_size(payload: bytes) -> int:
    """Length of the framing header `payload` has, judged by its first byte as the codec
    judges it (single-object when it starts C3, else Confluent)."""
    if payload[:1] == SINGLE_OBJECT_MAGIC[:1]:
        return len(SINGLE_OBJECT_MAGIC) + FINGERPRINT_SIZE
    return len(CONFLUENT_MAGIC) + CONFLUENT_ID_SIZE


def mutate(mutation: Mutation, payload: bytes, partner: bytes) -> bytes:
    """`payload` damaged by `mutation`; `partner` (another valid payload, non-empty) feeds
    the operations that mix two records. An empty payload (cut by an earlier mutation)
    can only grow: it becomes the mutation's data."""
    op, at, aux, data = mutation
    n = len(payload)
    if n == 0:
        return data
    i = at % n
    if op == "flip_bit":
        return payload[:i] + bytes([payload[i] ^ (1 << aux % 8)]) + payload[i + 1 :]
    if op == "truncate":
        return payload[:i]
    if op == "insert":
        j = at % (n + 1)
        return payload[:j] + data + payload[j:]
    if op == "delete":
        return payload[:i] + payload[i + 1 + aux % 8 :]
    if op == "overwrite":
        return payload[:i] + data + payload[i + len(data) :]
    if op == "append":
        return payload + data
    if op == "concat":
        return payload + partner
    if op == "splice":  # one record's head on another's tail
        return payload[: at % (n + 1)] + partner[aux % len(partner) :]
    if op == "garbage_body":
        return payload[: header_size(payload)] + data
    raise ValueError(f"unknown mutation {op!r}")


def mutations() -> st.SearchStrategy[Mutation]:
    return st.builds(
        Mutation,
        op=st.sampled_from(MUTATION_OPS),
        at=st.integers(0, 2**16),
        aux=st.integers(0, 2**16),
        data=st.binary(min_size=1, max_size=24),
    )


def random_mutation(rnd: random.Random) -> Mutation:
    """A mutation drawn like `mutations()` draws one, from a plain `random.Random`."""
    return Mutation(
        rnd.choice(MUTATION_OPS),
        rnd.randrange(2**16),
        rnd.randrange(2**16),
        rnd.randbytes(rnd.randint(1, 24)),
    )


def body_end(payload: bytes, writer: SchemaVersion) -> int:
    """Where fastavro's reader stops reading one `writer` record from `payload`'s body,
    as an offset in the payload. fastavro reads exactly the bytes a record takes and
    ignores the rest, so for a payload the codec accepted this must be len(payload):
    a smaller value would mean the codec let bytes after the record through."""
    start = header_size(payload)
    source = io.BytesIO(payload[start:])
    schemaless_reader(source, writer.schema, None)
    return start + source.tell()


# --- what every intake verdict must satisfy ----------------------------------------------

# The reasons `take_in` may give a payload that decoded: the domain rules.
DOMAIN_REASONS = frozenset(
    {
        ReasonCode.MISSING_REQUIRED_FIELD,
        ReasonCode.TIMESTAMP_IN_FUTURE,
        ReasonCode.TIMESTAMP_TOO_OLD,
    }
)
# The text fields an accepted event must have non-blank (DESIGN.md: a request names its
# authority, jurisdiction, platform and content; every event has its id).
REQUIRED_TEXT = {
    "removal.requests": (
        "event_id",
        "request_id",
        "authority",
        "jurisdiction",
        "platform",
        "content_id",
    ),
    "removal.actions": ("event_id", "action_id", "platform", "content_id"),
}


def check_intake(
    message: RawMessage,
    origin: SourceRef,
    result: object,
    store: SchemaStore,
    rules: IntakeRules,
) -> None:
    """Assert that `result` is a sound `take_in(message, origin, store, rules)` verdict for a
    message on one of the two event topics.

    A payload the codec refuses is quarantined with the codec's reason. One it decodes is
    accepted, or quarantined for a domain rule. A quarantine keeps the message whole; an
    accepted event is the decoded record, keeps the payload, obeys every domain rule, and
    its payload ends exactly where fastavro's reader says the record ends.
    """
    assert isinstance(result, Accepted | Quarantined), f"take_in returned {result!r}"
    assert rules.now is not None, "the oracle needs a fixed `now`"
    decoded: Decoded | None = None
    try:
        decoded = decode(
            message.value, SUBJECTS[message.topic], store, max_bytes=rules.max_message_bytes
        )
    except DecodeError as error:
        assert isinstance(result, Quarantined), f"accepted a payload the codec refuses: {error}"
        assert (result.reason, result.event_id) == (error.reason, None), result
    if isinstance(result, Quarantined):
        assert type(result.reason) is ReasonCode and result.message, result
        kept = (result.origin, result.topic, result.key, result.value)
        assert kept == (origin, message.topic, message.key, message.value), result
        if decoded is not None:
            assert result.reason in DOMAIN_REASONS, result
            assert result.event_id == (decoded.record["event_id"] or None), result
        return

    assert decoded is not None
    end = body_end(message.value, decoded.writer)
    assert end == len(message.value), f"accepted {len(message.value) - end} bytes after the record"
    assert (result.origin, result.payload, result.key) == (origin, message.value, message.key)
    assert result.schema_version == decoded.writer.version
    event = result.event
    if message.topic == REQUESTS_TOPIC:
        assert isinstance(event, RequestEvent) and event == RequestEvent.from_avro(decoded.record)
        times = [event.issued_at, event.withdrawn_at]
        if event.event_type is RequestEventType.WITHDRAWN:
            assert event.withdrawn_at is not None, event
    else:
        assert isinstance(event, ActionEvent) and event == ActionEvent.from_avro(decoded.record)
        times = [event.acted_at]
        if event.action is ActionType.RESTRICTED:
            assert event.jurisdiction, event
    for field in REQUIRED_TEXT[message.topic]:
        assert getattr(event, field).strip(), f"accepted a blank {field}: {event}"
    latest = rules.now + timedelta(seconds=rules.max_clock_skew_seconds)
    for t in times:
        assert t is None or rules.oldest_plausible <= t <= latest, event


def appended_reason(writer: SchemaVersion, topic: str, size: int, rules: IntakeRules) -> ReasonCode:
    """The one reason for a valid `writer` payload with bytes appended (`size` bytes in all)
    sent on `topic`: the size limit is checked first, then the subject, then the body."""
    if size > rules.max_message_bytes:
        return ReasonCode.OVERSIZE
    if writer.subject != SUBJECTS[topic]:
        return ReasonCode.INCOMPATIBLE_SCHEMA
    return ReasonCode.TRAILING_BYTES

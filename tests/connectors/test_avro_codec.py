"""avro_codec: framings, schema evolution, one test per reason code, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.avro_codec import (
    Decoded,
    EncodeError,
    decode,
    encode_body,
    encode_confluent,
    encode_single_object,
)
from connectors.errors import DecodeError, ReasonCode
from connectors.schema_store import SchemaStore, SchemaVersion, schema_fingerprint
from pipelines.resources import schemas_dir
from tests.fuzzing import FRAMINGS, payloads_of, records_for, writers_of

REQUESTS = "removal.requests-value"
ACTIONS = "removal.actions-value"
EVERYTHING = "test.everything-value"
STORE = SchemaStore.load()

REQUEST_V2: dict[str, Any] = {
    "event_id": "evt-1",
    "request_id": "RKN-2024-001",
    "event_type": "ISSUED",
    "authority": "Roskomnadzor",
    "authority_kind": "REGULATOR",
    "jurisdiction": "RU",
    "platform": "twitter",
    "content_id": "123",
    "content_type": "POST",
    "category": "EXTREMISM",
    "legal_basis": "149-FZ art. 15.1",
    "requested_action": "REMOVE",
    "issued_at": datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
    "withdrawn_at": None,
}
REQUEST_V1 = {
    k: v for k, v in REQUEST_V2.items() if k not in ("event_type", "authority_kind", "withdrawn_at")
}
V2_DEFAULTS = {"event_type": "ISSUED", "authority_kind": "OTHER", "withdrawn_at": None}
ACTION: dict[str, Any] = {
    "event_id": "evt-2",
    "action_id": "A-77",
    "request_id": "RKN-2024-001",
    "platform": "twitter",
    "content_id": "123",
    "action": "RESTRICTED",
    "jurisdiction": "RU",
    "acted_at": datetime(2024, 3, 2, 8, 30, 15, 123000, tzinfo=UTC),
}


# --- Avro binary by hand, to build corrupt bodies precisely ---------------------------


def zz(n: int) -> bytes:
    """Zigzag varint, without the 64-bit limit (to build overlong ones)."""
    value = (n << 1) ^ (n >> 63) if -(2**63) <= n < 2**63 else n << 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return zz(len(raw)) + raw


def request_v2_body(**pieces: bytes) -> bytes:
    """REQUEST_V2's body, with some fields replaced by raw encoded `pieces`."""
    fields = {
        "event_id": s("evt-1"),
        "request_id": s("RKN-2024-001"),
        "event_type": zz(0),
        "authority": s("Roskomnadzor"),
        "authority_kind": zz(0),
        "jurisdiction": s("RU"),
        "platform": s("twitter"),
        "content_id": s("123"),
        "content_type": zz(0),
        "category": zz(4),
        "legal_basis": s("149-FZ art. 15.1"),
        "requested_action": zz(0),
        "issued_at": zz(int(REQUEST_V2["issued_at"].timestamp() * 1000)),
        "withdrawn_at": zz(0),
    }
    fields.update(pieces)
    schema = STORE.latest(REQUESTS).schema
    assert isinstance(schema, dict)
    order = [f["name"] for f in schema["fields"]]
    return b"".join(fields[name] for name in order)


def single_object(body: bytes, sv: SchemaVersion) -> bytes:
    return b"\xc3\x01" + sv.fingerprint + body


def confluent(body: bytes, registry_id: int) -> bytes:
    return b"\x00" + registry_id.to_bytes(4, "big", signed=True) + body


def reason_of(
    payload: bytes, subject: str = REQUESTS, store: SchemaStore = STORE, **kw: Any
) -> str:
    with pytest.raises(DecodeError) as info:
        decode(payload, subject, store, **kw)
    return info.value.reason


# --- a test-only subject that uses every Avro type, to exercise the body scanner -------


def version_of(subject: str, version: int, registry_id: int | None, schema: Any) -> SchemaVersion:
    parsed = parse_schema(schema, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        subject, version, registry_id, parsed, canonical, schema_fingerprint(canonical)
    )


def _field(name: str, avro_type: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type}


# Field order matters: EVERYTHING_BASE_BODY's offsets below depend on it.
EVERYTHING_VERSION = version_of(
    EVERYTHING,
    1,
    900,
    {
        "type": "record",
        "name": "Everything",
        "namespace": "test",
        "fields": [
            _field("tags", {"type": "array", "items": "string"}),
            _field("nothing", {"type": "array", "items": "null"}),
            _field("flag", "boolean"),
            _field("small", "int"),
            _field("big", "long"),
            _field("f", "float"),
            _field("d", "double"),
            _field("blob", "bytes"),
            _field("digest", {"type": "fixed", "name": "Digest", "size": 4}),
            _field("attrs", {"type": "map", "values": ["null", "long"]}),
            _field("again", ["null", "Digest"]),
            _field(
                "chain",
                [
                    "null",
                    {
                        "type": "record",
                        "name": "Link",
                        "fields": [_field("next", ["null", "Link"])],
                    },
                ],
            ),
        ],
    },
)
FUZZ_STORE = SchemaStore(
    {
        **{subject: STORE.versions(subject) for subject in STORE.subjects()},
        EVERYTHING: (EVERYTHING_VERSION,),
    }
)
EVERYTHING_BASE: dict[str, Any] = {
    "tags": [],
    "nothing": [],
    "flag": False,
    "small": 0,
    "big": 0,
    "f": 0.0,
    "d": 0.0,
    "blob": b"",
    "digest": b"abcd",
    "attrs": {},
    "again": None,
    "chain": None,
}
# Offsets in EVERYTHING_BASE's body: tags 0, nothing 1, flag 2, small 3, big 4, f 5-8,
# d 9-16, blob 17, digest 18-21, attrs 22, again 23, chain 24.
EVERYTHING_BASE_BODY = encode_body(EVERYTHING_BASE, EVERYTHING_VERSION)


def everything_payload(offset: int, old_len: int, new: bytes) -> bytes:
    body = EVERYTHING_BASE_BODY[:offset] + new + EVERYTHING_BASE_BODY[offset + old_len :]
    return confluent(body, 900)


# --- generated payloads (strategies shared with the intake fuzz tests) -----------------

WRITERS = writers_of(FUZZ_STORE)


def valid_payloads() -> st.SearchStrategy[tuple[SchemaVersion, bytes]]:
    return payloads_of(FUZZ_STORE, WRITERS)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- round trips and evolution -----------------------------------------------------


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize(("subject", "record"), [(REQUESTS, REQUEST_V2), (ACTIONS, ACTION)])
def test_round_trip(framing: str, subject: str, record: dict[str, Any]) -> None:
    payload = FRAMINGS[framing](record, subject, STORE)
    decoded = decode(payload, subject, STORE)
    assert decoded == Decoded(record=record, writer=STORE.latest(subject))
    assert decoded.record["issued_at" if subject == REQUESTS else "acted_at"].tzinfo is not None


def test_wire_layout() -> None:
    latest = STORE.latest(REQUESTS)
    body = encode_body(REQUEST_V2, latest)
    assert body == request_v2_body()
    assert encode_single_object(REQUEST_V2, REQUESTS, STORE) == (
        b"\xc3\x01" + latest.fingerprint + body
    )
    assert encode_confluent(REQUEST_V2, REQUESTS, STORE) == b"\x00\x00\x00\x00\x03" + body


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_generated(data: st.DataObject) -> None:
    sv, framing = data.draw(st.sampled_from(WRITERS))
    if sv.subject == REQUESTS and sv.version == 1:
        return  # evolution has its own test
    record = data.draw(records_for(sv))
    payload = FRAMINGS[framing](record, sv.subject, FUZZ_STORE, sv.version)
    decoded = decode(payload, sv.subject, FUZZ_STORE)
    assert decoded.writer is sv
    assert decoded.record == record


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_v1_request_decodes_with_v2_defaults(framing: str) -> None:
    payload = FRAMINGS[framing](REQUEST_V1, REQUESTS, STORE, 1)
    decoded = decode(payload, REQUESTS, STORE)
    assert decoded.writer == STORE.version(REQUESTS, 1)
    assert decoded.record == {**REQUEST_V1, **V2_DEFAULTS}
    assert decoded.record["event_type"] == "ISSUED"
    assert decoded.record["authority_kind"] == "OTHER"
    assert decoded.record["withdrawn_at"] is None


@settings(max_examples=40, deadline=None)
@given(record=records_for(STORE.version(REQUESTS, 1)), framing=st.sampled_from(list(FRAMINGS)))
def test_v1_request_evolution_generated(record: dict[str, Any], framing: str) -> None:
    payload = FRAMINGS[framing](record, REQUESTS, STORE, 1)
    assert decode(payload, REQUESTS, STORE).record == {**record, **V2_DEFAULTS}


def test_defaults_may_be_left_out_when_encoding() -> None:
    payload = encode_confluent(REQUEST_V1, REQUESTS, STORE)  # v2 writer, defaults filled
    assert decode(payload, REQUESTS, STORE).record == {**REQUEST_V1, **V2_DEFAULTS}


@pytest.mark.parametrize(
    "record",
    [
        {**REQUEST_V2, "platform": 5},
        {**REQUEST_V2, "category": "NOT_A_CATEGORY"},
        {**REQUEST_V2, "surprise": "extra field"},
        {k: v for k, v in REQUEST_V2.items() if k != "platform"},
        {**REQUEST_V2, "issued_at": "yesterday"},
    ],
)
def test_encoding_a_bad_record_raises_encode_error(record: dict[str, Any]) -> None:
    with pytest.raises(EncodeError, match=r"removal\.requests-value v2"):
        encode_single_object(record, REQUESTS, STORE)


def test_confluent_needs_a_registry_id() -> None:
    raw = {"topic": "t", "key": None, "value": b"", "timestamp": None}
    with pytest.raises(EncodeError, match="no registry id"):
        encode_confluent(raw, "raw-message", STORE)


def test_unknown_subject_is_a_configuration_error() -> None:
    with pytest.raises(KeyError):
        decode(encode_confluent(ACTION, ACTIONS, STORE), "no.such-value", STORE)


def test_decode_error_shape() -> None:
    error = DecodeError(ReasonCode.TRUNCATED, "body ends early")
    assert str(error) == "TRUNCATED: body ends early"
    assert (error.reason, error.message) == (ReasonCode.TRUNCATED, "body ends early")
    copy = pickle.loads(pickle.dumps(error))  # Beam pickles what it moves between workers
    assert (copy.reason, copy.message, str(copy)) == (error.reason, error.message, str(error))


def test_reason_codes() -> None:
    expected = [
        "TRUNCATED",
        "TRAILING_BYTES",
        "UNKNOWN_FINGERPRINT",
        "UNKNOWN_SCHEMA_ID",
        "UNKNOWN_ENCODING",
        "INCOMPATIBLE_SCHEMA",
        "UNKNOWN_ENUM_SYMBOL",
        "MALFORMED_BODY",
        "MISSING_REQUIRED_FIELD",
        "TIMESTAMP_IN_FUTURE",
        "TIMESTAMP_TOO_OLD",
        "OVERSIZE",
        "INVALID_VALUE",
        "EVENT_ID_CONFLICT",
    ]
    assert [code.name for code in ReasonCode] == expected
    assert all(code.value == code.name for code in ReasonCode)


# --- one test per reason code --------------------------------------------------------

PREFIX_CASES = [
    (REQUESTS, REQUEST_V2, None),
    (REQUESTS, REQUEST_V1, 1),
    (ACTIONS, ACTION, None),
    (
        EVERYTHING,
        {**EVERYTHING_BASE, "tags": ["a", "bé"], "attrs": {"k": 3}, "chain": {"next": None}},
        None,
    ),
]


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize(("subject", "record", "version"), PREFIX_CASES)
def test_truncated_at_every_prefix(
    framing: str, subject: str, record: dict[str, Any], version: int | None
) -> None:
    payload = FRAMINGS[framing](record, subject, FUZZ_STORE, version)
    decode(payload, subject, FUZZ_STORE)  # the whole payload is fine
    for length in range(len(payload)):
        assert reason_of(payload[:length], subject, FUZZ_STORE) == ReasonCode.TRUNCATED, length


def test_truncated_string_that_claims_up_to_the_limit() -> None:
    payload = confluent(zz(1_000_000) + b"abc", 3)
    assert reason_of(payload) == ReasonCode.TRUNCATED


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_trailing_bytes(framing: str) -> None:
    payload = FRAMINGS[framing](REQUEST_V2, REQUESTS, STORE)
    assert reason_of(payload + b"\x00") == ReasonCode.TRAILING_BYTES
    assert reason_of(payload + payload) == ReasonCode.TRAILING_BYTES


def test_unknown_fingerprint() -> None:
    payload = b"\xc3\x01" + bytes(range(8)) + request_v2_body()
    assert reason_of(payload) == ReasonCode.UNKNOWN_FINGERPRINT


def test_unknown_schema_id() -> None:
    assert reason_of(confluent(request_v2_body(), 999)) == ReasonCode.UNKNOWN_SCHEMA_ID
    assert reason_of(confluent(request_v2_body(), -1)) == ReasonCode.UNKNOWN_SCHEMA_ID


@pytest.mark.parametrize(
    "payload",
    [b"\x01", b'{"event_id": "x"}', b"\xc3\x02" + bytes(20), b"\xc3\x00", b"\xff" * 50],
)
def test_unknown_encoding(payload: bytes) -> None:
    assert reason_of(payload) == ReasonCode.UNKNOWN_ENCODING


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_incompatible_schema_from_another_subject(framing: str) -> None:
    payload = FRAMINGS[framing](ACTION, ACTIONS, STORE)
    assert reason_of(payload, REQUESTS) == ReasonCode.INCOMPATIBLE_SCHEMA


def copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), target)
    return target


def add_request_version(
    directory: Path, file: str, schema: dict[str, Any], *, newest: bool
) -> None:
    """Register `schema` as an extra removal-request version in a copied catalog.

    As the newest version it becomes the reader; otherwise it slots in before real v2.
    """
    (directory / file).write_text(json.dumps(schema), encoding="utf-8")
    catalog_path = directory / "catalog.json"
    catalog = json.loads(catalog_path.read_text(encoding="utf-8"))
    v1, v2 = catalog["subjects"][REQUESTS]
    extra = {"registry_id": 90, "file": file}
    if newest:
        versions = [v1, v2, {"version": 3, **extra}]
    else:
        versions = [v1, {"version": 2, **extra}, {**v2, "version": 3}]
    catalog["subjects"][REQUESTS] = versions
    catalog_path.write_text(json.dumps(catalog), encoding="utf-8")


def real_request_v2() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (schemas_dir() / "removal_request" / "v2.avsc").read_text(encoding="utf-8")
    )
    return schema


def test_incompatible_schema_within_a_subject(tmp_path: Path) -> None:
    directory = copy_schemas(tmp_path)
    schema = real_request_v2()
    schema["fields"].append({"name": "new_required", "type": "string"})
    add_request_version(directory, "removal_request/v3_test.avsc", schema, newest=True)
    store = SchemaStore.load(directory)
    payload = encode_confluent(REQUEST_V2, REQUESTS, store, 2)
    assert reason_of(payload, store=store) == ReasonCode.INCOMPATIBLE_SCHEMA


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_unknown_enum_symbol(tmp_path: Path, framing: str) -> None:
    directory = copy_schemas(tmp_path)
    schema = real_request_v2()
    category = next(f for f in schema["fields"] if f["name"] == "category")
    category["type"]["symbols"].append("NEW_CATEGORY")
    add_request_version(directory, "removal_request/v2_extra_category.avsc", schema, newest=False)
    store = SchemaStore.load(directory)
    assert store.latest(REQUESTS).fingerprint == STORE.latest(REQUESTS).fingerprint

    known = FRAMINGS[framing](REQUEST_V2, REQUESTS, store, 2)
    assert decode(known, REQUESTS, store).record == REQUEST_V2  # resolution is per value
    unknown = FRAMINGS[framing]({**REQUEST_V2, "category": "NEW_CATEGORY"}, REQUESTS, store, 2)
    with pytest.raises(DecodeError) as info:
        decode(unknown, REQUESTS, store)
    assert info.value.reason == ReasonCode.UNKNOWN_ENUM_SYMBOL
    assert "NEW_CATEGORY" in info.value.message


MALFORMED_REQUEST_BODIES = {
    "negative string length": request_v2_body(event_id=zz(-3) + b"abc"),
    "length beyond the size limit": request_v2_body(event_id=zz(2**40)),
    "invalid UTF-8": request_v2_body(event_id=s(b"\xff\xfe")),
    "varint over 64 bits": request_v2_body(issued_at=b"\xff" * 10 + b"\x01"),
    "varint over 10 bytes": request_v2_body(issued_at=b"\x80" * 10 + b"\x00"),
    # fastavro alone would read index -1 as the last symbol
    "negative enum index": request_v2_body(category=zz(-1)),
    "enum index too large": request_v2_body(category=zz(11)),
    "negative union index": request_v2_body(withdrawn_at=zz(-1)),
    "union index too large": request_v2_body(withdrawn_at=zz(2)),
    "timestamp outside datetime": request_v2_body(issued_at=zz(2**62)),
}


@pytest.mark.parametrize("body", MALFORMED_REQUEST_BODIES.values(), ids=MALFORMED_REQUEST_BODIES)
def test_malformed_body(body: bytes) -> None:
    assert reason_of(confluent(body, 3)) == ReasonCode.MALFORMED_BODY
    assert reason_of(single_object(body, STORE.latest(REQUESTS))) == ReasonCode.MALFORMED_BODY


MALFORMED_EVERYTHING = {
    "boolean byte 2": everything_payload(2, 1, b"\x02"),
    "int beyond 32 bits": everything_payload(3, 1, zz(2**31)),
    "negative block size": everything_payload(0, 1, zz(-1) + zz(-2) + s("a") + zz(0)),
    "block size disagrees": everything_payload(0, 1, zz(-1) + zz(5) + s("a") + zz(0)),
    "block count beyond the limit": everything_payload(0, 1, zz(2**40)),
    "too many zero-size items": everything_payload(1, 1, zz(70_000) + zz(0)),
    "map value union index": everything_payload(22, 1, zz(1) + s("k") + zz(5) + zz(0)),
    "nesting too deep": everything_payload(24, 1, b"\x02" * 500 + b"\x00"),
}


@pytest.mark.parametrize("payload", MALFORMED_EVERYTHING.values(), ids=MALFORMED_EVERYTHING)
def test_malformed_body_every_type(payload: bytes) -> None:
    assert reason_of(payload, EVERYTHING, FUZZ_STORE) == ReasonCode.MALFORMED_BODY


def test_well_formed_unusual_encodings() -> None:
    # A negative block count with its correct byte size, zero-size items, and a chain of
    # nested records within the depth limit are all valid Avro.
    sized = everything_payload(0, 1, zz(-2) + zz(4) + s("a") + s("b") + zz(0))
    assert decode(sized, EVERYTHING, FUZZ_STORE).record["tags"] == ["a", "b"]
    nulls = everything_payload(1, 1, zz(5) + zz(0))
    assert decode(nulls, EVERYTHING, FUZZ_STORE).record["nothing"] == [None] * 5
    chain = everything_payload(24, 1, b"\x02" * 30 + b"\x00")
    depth, link = 0, decode(chain, EVERYTHING, FUZZ_STORE).record["chain"]
    while link is not None:
        depth, link = depth + 1, link["next"]
    assert depth == 30


def test_oversize() -> None:
    payload = encode_confluent(REQUEST_V2, REQUESTS, STORE)
    decode(payload, REQUESTS, STORE, max_bytes=len(payload))
    assert reason_of(payload, max_bytes=len(payload) - 1) == ReasonCode.OVERSIZE
    assert reason_of(b"\xff" * (1_048_576 + 1)) == ReasonCode.OVERSIZE  # checked first


def test_corrupt_lengths_allocate_little() -> None:
    cases = [
        (confluent(zz(2**62), 3), REQUESTS),
        (confluent(zz(1_048_000) + b"x", 3), REQUESTS),
        (everything_payload(0, 1, zz(1_000_000) + s("a")), EVERYTHING),
        (everything_payload(1, 1, zz(60_000) + b"\x02"), EVERYTHING),
    ]
    tracemalloc.start()
    try:
        for payload, subject in cases:
            with pytest.raises(DecodeError):
                decode(payload, subject, FUZZ_STORE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


# --- fuzzing -------------------------------------------------------------------------

SUBJECTS = st.sampled_from(FUZZ_STORE.subjects())


def decode_or_reject(payload: bytes, subject: str) -> None:
    """Decoding may succeed or raise DecodeError; any other exception fails the test."""
    with contextlib.suppress(DecodeError):
        decode(payload, subject, FUZZ_STORE)


@FUZZ
@given(payload=st.binary(max_size=200), subject=SUBJECTS)
def test_fuzz_random_bytes(payload: bytes, subject: str) -> None:
    decode_or_reject(payload, subject)


# Valid headers, mostly with their own subject so that random bodies reach the scanner.
HEADERS = [
    (b"\xc3\x01" + sv.fingerprint if framing == "single-object" else confluent(b"", rid), sv)
    for sv, framing in WRITERS
    for rid in [sv.registry_id or 0]
]


@FUZZ
@given(
    header=st.sampled_from(HEADERS),
    body=st.binary(max_size=200),
    subject=SUBJECTS,
    own_subject=st.integers(0, 9),
)
def test_fuzz_random_bodies(
    header: tuple[bytes, SchemaVersion], body: bytes, subject: str, own_subject: int
) -> None:
    prefix, sv = header
    decode_or_reject(prefix + body, sv.subject if own_subject else subject)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[SchemaVersion, bytes]:
    sv, payload = draw(valid_payloads())
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif op == "replace":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        else:
            del data[draw(st.integers(0, len(data) - 1))]
    return sv, bytes(data)


@FUZZ
@given(case=mutated_payloads())
def test_fuzz_mutated_payloads(case: tuple[SchemaVersion, bytes]) -> None:
    sv, payload = case
    decode_or_reject(payload, sv.subject)


@FUZZ
@given(case=valid_payloads(), extra=st.binary(min_size=1, max_size=20))
def test_fuzz_appended_bytes_never_accepted(
    case: tuple[SchemaVersion, bytes], extra: bytes
) -> None:
    sv, payload = case
    assert decode(payload, sv.subject, FUZZ_STORE).writer is sv
    with pytest.raises(DecodeError) as info:
        decode(payload + extra, sv.subject, FUZZ_STORE)
    assert info.value.reason == ReasonCode.TRAILING_BYTES


@settings(max_examples=100, deadline=None)
@given(case=valid_payloads(), data=st.data())
def test_fuzz_prefixes_are_truncated(
    case: tuple[SchemaVersion, bytes], data: st.DataObject
) -> None:
    sv, payload = case
    length = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(DecodeError) as info:
        decode(payload[:length], sv.subject, FUZZ_STORE)
    assert info.value.reason == ReasonCode.TRUNCATED


def test_millis_strategy_spans_the_datetime_range() -> None:
    # Guards the generated-record tests above: their timestamps reach both ends.
    latest = datetime(9999, 12, 30, tzinfo=UTC) - timedelta(milliseconds=1)
    record = {**ACTION, "acted_at": latest}
    assert decode(encode_confluent(record, ACTIONS, STORE), ACTIONS, STORE).record == record

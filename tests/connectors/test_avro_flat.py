"""avro_flat: the compiled readers change no verdict of `decode`.

Every payload, valid or damaged, must get from `decode` exactly what the checked path alone
(scanner, then fastavro) gives it: the same record, keys in the same order and values of
the same types, or the same reason and message.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors.avro_codec as codec
from connectors.avro_codec import encode_single_object
from connectors.avro_flat import compile_reader
from connectors.errors import DecodeError
from connectors.schema_store import SchemaStore, SchemaVersion
from tests.connectors.test_avro_codec import (
    EVERYTHING_VERSION,
    FUZZ_STORE,
    WRITERS,
    version_of,
)
from tests.fuzzing import FRAMINGS, mutate, mutations, payloads_of, records_for
from tests.site_catalog import NEW_CATEGORY, write_site_catalog

STORE = SchemaStore.load()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVENT_VERSIONS = [
    sv
    for subject in ("removal.requests-value", "removal.actions-value")
    for sv in STORE.versions(subject)
]


def _typed(value: Any) -> Any:
    """`value` with its type spelled out, so that 1 and True, or two NaNs, compare right."""
    if isinstance(value, dict):
        return [(k, _typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo, value.fold)
    return (type(value), value)


def _outcome(payload: bytes, subject: str, store: SchemaStore) -> Any:
    try:
        decoded = codec.decode(payload, subject, store)
    except DecodeError as e:
        return ("refused", e.reason, e.message)
    return ("decoded", decoded.writer, _typed(decoded.record))


def assert_same_verdict(payload: bytes, subject: str, store: SchemaStore) -> None:
    fast = _outcome(payload, subject, store)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(codec, "_flat_reader", lambda writer, reader: None)
        checked = _outcome(payload, subject, store)
    assert fast == checked


def _varint(n: int, padding: int) -> bytes:
    """Zigzag varint of `n`, written with `padding` needless continuation bytes."""
    z = (n << 1) ^ (n >> 63)
    groups = []
    while True:
        groups.append(z & 0x7F)
        z >>= 7
        if not z:
            break
    groups += [0] * min(padding, 10 - len(groups))
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


def _padded_body(schema: Any, value: Any, paddings: Iterator[int]) -> bytes:
    """A valid but unusual encoding of `value`: every varint padded (up to 10 bytes)."""
    if isinstance(schema, list):
        branch = schema.index("null") if value is None else 1 - schema.index("null")
        return _varint(branch, next(paddings)) + _padded_body(schema[branch], value, paddings)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind == "record":
        return b"".join(
            _padded_body(f["type"], value[f["name"]], paddings) for f in schema["fields"]
        )
    if kind == "null":
        return b""
    if kind == "string":
        raw = value.encode()
        return _varint(len(raw), next(paddings)) + raw
    if kind == "enum":
        return _varint(schema["symbols"].index(value), next(paddings))
    if kind == "long":  # timestamp-millis, the only long in the event schemas
        millis = (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        return _varint(millis, next(paddings))
    raise AssertionError(kind)


@FUZZ
@given(
    case=payloads_of(FUZZ_STORE, WRITERS),
    partner=payloads_of(FUZZ_STORE, WRITERS),
    edits=st.lists(mutations(), max_size=3),
    other_subject=st.sampled_from(FUZZ_STORE.subjects()) | st.none(),
)
def test_same_verdict_on_valid_and_damaged_payloads(
    case: tuple[SchemaVersion, bytes],
    partner: tuple[SchemaVersion, bytes],
    edits: list[Any],
    other_subject: str | None,
) -> None:
    sv, payload = case
    for edit in edits:
        payload = mutate(edit, payload, partner[1])
    assert_same_verdict(payload, other_subject or sv.subject, FUZZ_STORE)


@FUZZ
@given(sv=st.sampled_from(EVENT_VERSIONS), data=st.data())
def test_same_record_from_unusual_encodings(sv: SchemaVersion, data: st.DataObject) -> None:
    record = data.draw(records_for(sv))
    paddings = iter(data.draw(st.lists(st.sampled_from([0, 0, 1, 3, 9]), min_size=40, max_size=40)))
    payload = b"\xc3\x01" + sv.fingerprint + _padded_body(sv.schema, record, paddings)
    assert_same_verdict(payload, sv.subject, STORE)


@pytest.mark.parametrize("pin", [2, None])
def test_same_verdict_with_a_reader_that_lacks_a_symbol(tmp_path: Any, pin: int | None) -> None:
    site = SchemaStore.load(write_site_catalog(tmp_path / "site", pin_reader=pin))
    subject = "removal.requests-value"
    for sv in site.versions(subject):
        for category in ("DRUGS", NEW_CATEGORY):
            base = {f["name"]: _example(f["name"]) for f in sv.schema["fields"]}
            if category not in next(
                f["type"]["symbols"] for f in sv.schema["fields"] if f["name"] == "category"
            ):
                continue
            for framing in FRAMINGS:
                payload = FRAMINGS[framing](
                    {**base, "category": category}, subject, site, sv.version
                )
                assert_same_verdict(payload, subject, site)


def _example(field: str) -> Any:
    values: dict[str, Any] = {
        "event_type": "ISSUED",
        "authority_kind": "COURT",
        "content_type": "POST",
        "requested_action": "REMOVE",
        "issued_at": datetime(2021, 2, 1, 10, 0, 0, 123000, tzinfo=UTC),
        "withdrawn_at": None,
    }
    return values.get(field, f"{field}-1")


@settings(max_examples=100, deadline=None)
@given(sv=st.sampled_from(EVENT_VERSIONS), data=st.data())
def test_event_payloads_take_the_fast_path(sv: SchemaVersion, data: st.DataObject) -> None:
    reader = STORE.reader(sv.subject)
    read = compile_reader(sv.schema, None if sv is reader else reader.schema)
    assert read is not None, sv.label
    payload = encode_single_object(data.draw(records_for(sv)), sv.subject, STORE, sv.version)
    record = read(payload, 10)
    assert record is not None
    assert _typed(record) == _typed(codec.decode(payload, sv.subject, STORE).record)


def test_other_schemas_are_left_to_the_checked_path() -> None:
    assert compile_reader(EVERYTHING_VERSION.schema, None) is None  # arrays, maps, nesting
    decimal = version_of(
        "test.decimal-value",
        1,
        None,
        {
            "type": "record",
            "name": "Price",
            "fields": [
                {
                    "name": "amount",
                    "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
                }
            ],
        },
    )
    assert compile_reader(decimal.schema, None) is None
    v1, v2 = STORE.versions("removal.requests-value")
    assert compile_reader(v2.schema, v1.schema) is not None  # v2 fields v1 lacks: dropped


def test_primitives_read_as_fastavro_reads_them() -> None:
    sv = version_of(
        "test.primitives-value",
        1,
        901,
        {
            "type": "record",
            "name": "Primitives",
            "fields": [
                {"name": "flag", "type": "boolean"},
                {"name": "small", "type": "int"},
                {"name": "f", "type": "float"},
                {"name": "d", "type": ["null", "double"]},
                {"name": "blob", "type": ["bytes", "null"]},
                {"name": "nothing", "type": "null"},
            ],
        },
    )
    store = SchemaStore({"test.primitives-value": (sv,)})
    read = compile_reader(sv.schema, None)
    assert read is not None
    header = b"\x00" + (901).to_bytes(4, "big")
    flag, small = b"\x01", _varint(-(2**31), 0)
    rest = struct.pack("<f", 1.5) + b"\x02" + struct.pack("<d", -0.25)
    cases = {  # body -> whether it is valid
        flag + small + rest + b"\x00\x04ab": True,
        flag + small + rest + b"\x02": True,
        b"\x00" + small + rest + b"\x02": True,
        flag + small + rest + b"\x04": False,  # union index 2 of 2
        flag + small + rest + b"\x00\x03": False,  # negative length
        b"\x02" + small + rest + b"\x02": False,  # not a boolean
        flag + _varint(2**31, 0) + rest + b"\x02": False,  # int too large
        flag + _varint(-(2**31) - 1, 0) + rest + b"\x02": False,  # int too small
    }
    for body, valid in cases.items():
        assert_same_verdict(header + body, sv.subject, store)
        assert (read(header + body, len(header)) is not None) == valid, body


SMALL = version_of(
    "test.small-value",
    1,
    4,  # the header's last byte, 0x04, is a valid string length: see the first case below
    {
        "type": "record",
        "name": "Small",
        "fields": [
            {"name": "a", "type": "string"},
            {"name": "b", "type": "string"},
            {"name": "n", "type": "long"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}},
        ],
    },
)
SMALL_STORE = SchemaStore({"test.small-value": (SMALL,)})
SMALL_BODIES = {
    # A negative length must not move the reader back: here it would land on the header's
    # last byte, read b as the two bytes after it, then n and e, and end exactly at the end.
    "negative length": (b"\x03x\x00\x00", "MALFORMED_BODY"),
    "negative enum index": (b"\x00\x00\x00\x01", "MALFORMED_BODY"),
    "enum index too large": (b"\x00\x00\x00\x04", "MALFORMED_BODY"),
    "10-byte varint over 64 bits": (b"\x00\x00" + b"\xff" * 9 + b"\x02\x00", "MALFORMED_BODY"),
    "10-byte varint": (b"\x00\x00" + b"\xff" * 9 + b"\x01\x00", None),
    "9-byte varint": (b"\x00\x00" + b"\xff" * 8 + b"\x7f\x02", None),
    "padded zero": (b"\x00\x00" + b"\x80" * 9 + b"\x00\x00", None),
    "string ends early": (b"\x00\x06ab", "TRUNCATED"),
    "trailing byte": (b"\x00\x00\x00\x00\x00", "TRAILING_BYTES"),
}


@pytest.mark.parametrize(("body", "reason"), SMALL_BODIES.values(), ids=SMALL_BODIES)
def test_strictness_at_the_edges(body: bytes, reason: str | None) -> None:
    payload = b"\x00" + (4).to_bytes(4, "big") + body
    assert_same_verdict(payload, SMALL.subject, SMALL_STORE)
    outcome = _outcome(payload, SMALL.subject, SMALL_STORE)
    assert (outcome[1] if outcome[0] == "refused" else None) == reason, outcome

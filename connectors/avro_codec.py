"""Encode and decode event payloads: Avro single-object encoding and the Confluent wire format.

In: a payload (bytes from Kafka or a raw-message file) and the subject it should hold.
Out: `Decoded` (the record read with the subject's reader schema, plus the writer version),
or a `DecodeError` with a `ReasonCode` — never any other exception for bad bytes.

The checked path is two passes. `_BodyScanner` walks the body against the writer schema
and checks the binary encoding strictly (lengths, indexes, varints, UTF-8, exact end).
Only a body that passes is handed to fastavro, which resolves it to the reader schema. The
first pass exists because fastavro's reader trusts its input: it maps a negative enum
index to a symbol counted from the end, accepts varints longer than 64 bits and booleans
other than 0/1, reads out-of-range ints, asks the stream for whatever length a corrupt
prefix announces, and ignores bytes left after the record.

Both passes walk the schema value by value in Python, which costs tens of microseconds a
record. So a body of a flat record schema (every event schema) first goes through a reader
compiled for its (writer, reader) pair (`connectors.avro_flat`), which makes the same
checks and builds the same record in one straight pass. It only ever accepts: a body it
does not take, valid or not, goes the checked way, which gives the verdict and the reason.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from connectors.avro_flat import FlatReader, compile_reader
from connectors.errors import DecodeError, ReasonCode
from connectors.schema_store import FINGERPRINT_SIZE, SchemaStore, SchemaVersion

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_ID_SIZE = 4
DEFAULT_MAX_BYTES = 1_048_576

_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + FINGERPRINT_SIZE
_CONFLUENT_HEADER = len(CONFLUENT_MAGIC) + CONFLUENT_ID_SIZE
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_MAX_VARINT_BYTES = 10
# Schema steps (union branch, named reference, record field, collection item) allowed
# on the path to any value. Event schemas need a handful; the cap keeps a corrupt body of
# a recursive schema from exhausting the Python stack (here or in fastavro).
_MAX_DEPTH = 200
# Items that encode to zero bytes (null, empty records) cost no input, so only this cap
# stops a corrupt block count from building a huge list.
_MAX_EMPTY_ITEMS = 65_536
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded payload: `record` in the reader schema's shape, and its writer."""

    record: dict[str, Any]
    writer: SchemaVersion


class EncodeError(ValueError):
    """A record that does not fit the schema it is being encoded with."""


def encode_body(record: Mapping[str, Any], writer: SchemaVersion) -> bytes:
    """The schemaless Avro binary of `record` with `writer`'s schema (no framing).

    Fields with a default may be left out. Raises EncodeError for missing, extra or
    mistyped fields. Naive datetimes are taken as UTC (fastavro's behaviour).
    """
    datum = dict(record)
    try:
        validate(datum, writer.schema, raise_errors=True)
        out = io.BytesIO()
        schemaless_writer(out, writer.schema, datum, strict_allow_default=True)
    except (ValidationError, ValueError, TypeError, OverflowError) as e:
        raise EncodeError(f"record does not match {writer.label}: {e}") from e
    return out.getvalue()


def encode_single_object(
    record: Mapping[str, Any], subject: str, store: SchemaStore, version: int | None = None
) -> bytes:
    """Avro single-object encoding: C3 01, the writer's 8-byte fingerprint, the body.

    `version` None means the subject's reader version (what this pipeline reads back).
    """
    writer = _writer(subject, store, version)
    return SINGLE_OBJECT_MAGIC + writer.fingerprint + encode_body(record, writer)


def encode_confluent(
    record: Mapping[str, Any], subject: str, store: SchemaStore, version: int | None = None
) -> bytes:
    """Confluent wire format: 0x00, the 4-byte big-endian registry id, the body.

    `version` None means the subject's reader version. Raises EncodeError when the version
    has no registry id.
    """
    writer = _writer(subject, store, version)
    if writer.registry_id is None:
        raise EncodeError(f"{writer.label} has no registry id")
    header = CONFLUENT_MAGIC + writer.registry_id.to_bytes(CONFLUENT_ID_SIZE, "big", signed=True)
    return header + encode_body(record, writer)


def decode(
    payload: bytes, subject: str, store: SchemaStore, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Decoded:
    """Decode a single-object or Confluent payload holding a `subject` record.

    The framing is recognised from the first bytes; the body is read with its writer
    schema resolved to the subject's reader schema (`SchemaStore.reader`: the newest
    version unless the catalog pins one). Raises DecodeError for any payload
    that is not exactly one valid record. An unknown `subject` is a configuration error,
    not a bad payload: it raises KeyError before the payload is looked at.
    """
    reader = store.reader(subject)
    if len(payload) > max_bytes:
        raise DecodeError(
            ReasonCode.OVERSIZE, f"payload is {len(payload)} bytes, limit is {max_bytes}"
        )
    writer, header = _unframe(payload, store)
    if writer.subject != subject:
        raise DecodeError(
            ReasonCode.INCOMPATIBLE_SCHEMA,
            f"written with {writer.label}, expected a {subject} schema",
        )
    read = _flat_reader(writer, reader)
    if read is not None:
        # The body fits max_bytes (the payload does), so the reader needs no length limit.
        record = read(payload, header)
        if record is not None:
            return Decoded(record=record, writer=writer)
    body = payload[header:]
    enums_seen = _BodyScanner(body, writer, max_bytes).scan()
    return Decoded(record=_resolve(body, writer, reader, enums_seen), writer=writer)


# Compiled readers by (id of the writer's parsed schema, id of the reader's). An entry keeps
# both schemas alive, so their ids cannot be reused while it exists. Keyed by identity, not
# by SchemaVersion equality: two versions with one canonical form may still differ in
# what decoding depends on (logical types are not part of the canonical form).
_FLAT_READERS: dict[tuple[int, int], tuple[Any, Any, FlatReader | None]] = {}
# Each process sees a handful of pairs; the bound only matters to long test sessions that
# load many catalogs.
_MAX_FLAT_READERS = 64


def _flat_reader(writer: SchemaVersion, reader: SchemaVersion) -> FlatReader | None:
    """The compiled reader of (writer, reader), or None when the pair is not flat."""
    key = (id(writer.schema), id(reader.schema))
    entry = _FLAT_READERS.get(key)
    if entry is None:
        if len(_FLAT_READERS) >= _MAX_FLAT_READERS:
            _FLAT_READERS.clear()
        compiled = compile_reader(writer.schema, None if writer is reader else reader.schema)
        entry = _FLAT_READERS[key] = (writer.schema, reader.schema, compiled)
    return entry[2]


def _writer(subject: str, store: SchemaStore, version: int | None) -> SchemaVersion:
    return store.reader(subject) if version is None else store.version(subject, version)


_SINGLE_OBJECT_FIRST, _SINGLE_OBJECT_SECOND = SINGLE_OBJECT_MAGIC
_CONFLUENT_FIRST = CONFLUENT_MAGIC[0]


def _unframe(payload: bytes, store: SchemaStore) -> tuple[SchemaVersion, int]:
    """The writer version of `payload` and the length of its framing header (where the
    body starts)."""
    if not payload:
        raise DecodeError(ReasonCode.TRUNCATED, "empty payload")
    first = payload[0]
    if first == _SINGLE_OBJECT_FIRST:
        if len(payload) > 1 and payload[1] != _SINGLE_OBJECT_SECOND:
            raise DecodeError(
                ReasonCode.UNKNOWN_ENCODING,
                f"starts with {payload[:2].hex()}, neither single-object (c301) nor Confluent (00)",
            )
        _need_header(payload, _SINGLE_OBJECT_HEADER, "single-object")
        fp = payload[len(SINGLE_OBJECT_MAGIC) : _SINGLE_OBJECT_HEADER]
        writer = store.by_fingerprint(fp)
        if writer is None:
            raise DecodeError(
                ReasonCode.UNKNOWN_FINGERPRINT, f"no schema has fingerprint {fp.hex()}"
            )
        return writer, _SINGLE_OBJECT_HEADER
    if first == _CONFLUENT_FIRST:
        _need_header(payload, _CONFLUENT_HEADER, "Confluent")
        schema_id = int.from_bytes(payload[1:_CONFLUENT_HEADER], "big", signed=True)
        writer = store.by_registry_id(schema_id)
        if writer is None:
            raise DecodeError(
                ReasonCode.UNKNOWN_SCHEMA_ID, f"no schema has registry id {schema_id}"
            )
        return writer, _CONFLUENT_HEADER
    raise DecodeError(
        ReasonCode.UNKNOWN_ENCODING,
        f"starts with {payload[:1].hex()}, neither single-object (c301) nor Confluent (00)",
    )


def _need_header(payload: bytes, size: int, framing: str) -> None:
    if len(payload) < size:
        raise DecodeError(
            ReasonCode.TRUNCATED,
            f"{len(payload)} bytes, shorter than the {size}-byte {framing} header",
        )


def _resolve(
    body: bytes, writer: SchemaVersion, reader: SchemaVersion, enums_seen: list[tuple[str, str]]
) -> dict[str, Any]:
    """Read a body already checked by `_BodyScanner`, resolved to `reader`."""
    source = io.BytesIO(body)
    try:
        datum = schemaless_reader(
            source, writer.schema, None if writer is reader else reader.schema
        )
    except SchemaResolutionError as e:
        missing = _symbol_missing_from_reader(enums_seen, reader)
        if missing is not None:
            raise DecodeError(
                ReasonCode.UNKNOWN_ENUM_SYMBOL,
                f"{missing[0]} symbol {missing[1]!r} is not in {reader.label}",
            ) from e
        raise DecodeError(
            ReasonCode.INCOMPATIBLE_SCHEMA,
            f"{writer.label} does not resolve to {reader.label}: {e}",
        ) from e
    # The scanner accepted the encoding, so what fastavro can still reject is a value it
    # cannot convert (e.g. a timestamp outside datetime's range); which exception type
    # that raises is fastavro's internal business, hence the broad catch.
    except Exception as e:
        raise DecodeError(
            ReasonCode.MALFORMED_BODY, f"unreadable value: {type(e).__name__}: {e}"
        ) from e
    if source.tell() != len(body):
        raise DecodeError(
            ReasonCode.MALFORMED_BODY,
            f"reader stopped at byte {source.tell()} of a {len(body)}-byte body",
        )
    if not isinstance(datum, dict):
        raise DecodeError(ReasonCode.INCOMPATIBLE_SCHEMA, f"{reader.label} is not a record")
    return datum


def _symbol_missing_from_reader(
    enums_seen: list[tuple[str, str]], reader: SchemaVersion
) -> tuple[str, str] | None:
    """The first (enum name, symbol) read from the body that the reader cannot take."""
    # Resolution matches enums by unqualified name (Avro spec).
    reader_enums = {str(e["name"]).rsplit(".", 1)[-1]: e for e in _enum_definitions(reader.schema)}
    for name, symbol in enums_seen:
        enum = reader_enums.get(name.rsplit(".", 1)[-1])
        if enum is not None and symbol not in enum["symbols"] and enum.get("default") is None:
            return name, symbol
    return None


def _enum_definitions(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += _enum_definitions(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "enum":
            found.append(schema)
        for key in ("type", "fields", "items", "values"):
            found += _enum_definitions(schema.get(key))
    return found


@functools.lru_cache(maxsize=256)
def _scan_plan(canonical_form: str) -> tuple[Any, dict[str, Any]]:
    """(schema, named types by full name) from a Parsing Canonical Form.

    The canonical form holds exactly what the binary encoding depends on, with full
    names everywhere, so it is a simpler thing to walk than fastavro's parsed schema.
    """
    root = json.loads(canonical_form)
    named: dict[str, Any] = {}

    def collect(schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                collect(branch)
        elif isinstance(schema, dict):
            if schema["type"] in ("record", "error", "enum", "fixed"):
                named[schema["name"]] = schema
            for field in schema.get("fields", ()):
                collect(field["type"])
            collect(schema.get("items"))
            collect(schema.get("values"))

    collect(root)
    return root, named


class _BodyScanner:
    """Checks that `body` is exactly one value of the writer schema, strictly encoded."""

    def __init__(self, body: bytes, writer: SchemaVersion, max_bytes: int) -> None:
        self._buf = body
        self._pos = 0
        self._max_bytes = max_bytes
        self._root, self._named = _scan_plan(writer.canonical_form)
        self._empty_items = 0
        self._enums: list[tuple[str, str]] = []

    def scan(self) -> list[tuple[str, str]]:
        """Walk the whole body; return the (enum full name, symbol) pairs read."""
        self._value(self._root, 0)
        if self._pos != len(self._buf):
            raise DecodeError(
                ReasonCode.TRAILING_BYTES,
                f"{len(self._buf) - self._pos} bytes left after the record "
                f"(body is {len(self._buf)} bytes)",
            )
        return self._enums

    def _value(self, schema: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _malformed(f"values nested deeper than {_MAX_DEPTH} levels")
        if isinstance(schema, list):
            index = self._long()
            if not 0 <= index < len(schema):
                raise _malformed(f"union branch {index} out of range 0..{len(schema) - 1}")
            self._value(schema[index], depth + 1)
            return
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            self._value(self._named[schema], depth + 1)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            return
        if kind == "boolean":
            if self._take(1)[0] > 1:
                raise _malformed("boolean byte is neither 0 nor 1")
        elif kind == "int":
            if not _INT_MIN <= self._long() <= _INT_MAX:
                raise _malformed("int value outside 32 bits")
        elif kind == "long":
            self._long()
        elif kind == "float":
            self._take(4)
        elif kind == "double":
            self._take(8)
        elif kind == "bytes":
            self._take(self._length())
        elif kind == "string":
            self._string()
        elif kind == "fixed":
            self._take(schema["size"])
        elif kind == "enum":
            index = self._long()
            symbols = schema["symbols"]
            if not 0 <= index < len(symbols):
                raise _malformed(f"{schema['name']} index {index} out of range")
            self._enums.append((schema["name"], symbols[index]))
        elif kind in ("record", "error"):
            for field in schema["fields"]:
                self._value(field["type"], depth + 1)
        elif kind == "array":
            self._blocks(schema["items"], is_map=False, depth=depth)
        elif kind == "map":
            self._blocks(schema["values"], is_map=True, depth=depth)
        else:  # the canonical form came from a parsed schema, so this is a bug
            raise AssertionError(f"unexpected schema type {kind!r}")

    def _blocks(self, item: Any, *, is_map: bool, depth: int) -> None:
        item_can_be_empty = not is_map and _encodes_empty(item, self._named, frozenset())
        while True:
            count = self._long()
            if count == 0:
                return
            declared_size = None
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                declared_size = self._long()
                if declared_size < 0:
                    raise _malformed(f"negative block size {declared_size}")
            if count > self._max_bytes:
                raise _malformed(f"block count {count} exceeds the {self._max_bytes}-byte limit")
            if item_can_be_empty:
                self._empty_items += count
                if self._empty_items > _MAX_EMPTY_ITEMS:
                    raise _malformed(f"more than {_MAX_EMPTY_ITEMS} zero-size items")
            start = self._pos
            for _ in range(count):
                if is_map:
                    self._string()
                self._value(item, depth + 1)
            if declared_size is not None and self._pos - start != declared_size:
                raise _malformed(f"block declares {declared_size} bytes, holds {self._pos - start}")

    def _string(self) -> None:
        raw = self._take(self._length())
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed(f"string is not UTF-8: {e.reason} at byte {e.start}") from e

    def _length(self) -> int:
        n = self._long()
        if n < 0:
            raise _malformed(f"negative length {n}")
        # No valid payload can hold more than max_bytes, so a larger length is corrupt
        # rather than cut short.
        if n > self._max_bytes:
            raise _malformed(f"length {n} exceeds the {self._max_bytes}-byte limit")
        return n

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._buf):
            raise DecodeError(
                ReasonCode.TRUNCATED,
                f"body ends at byte {len(self._buf)}, value needs bytes {self._pos}..{end}",
            )
        chunk = self._buf[self._pos : end]
        self._pos = end
        return chunk

    def _long(self) -> int:
        """A zigzag varint of at most 64 bits."""
        acc = 0
        for i in range(_MAX_VARINT_BYTES):
            if self._pos >= len(self._buf):
                raise DecodeError(ReasonCode.TRUNCATED, "body ends inside a varint")
            byte = self._buf[self._pos]
            self._pos += 1
            # The 10th byte holds only bit 63: anything more overflows a long.
            if i == _MAX_VARINT_BYTES - 1 and byte > 1:
                raise _malformed("varint longer than 64 bits")
            acc |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
        return (acc >> 1) ^ -(acc & 1)


def _encodes_empty(schema: Any, named: dict[str, Any], seen: frozenset[str]) -> bool:
    """Whether a value of `schema` can encode to zero bytes (null, empty records...)."""
    if isinstance(schema, list):
        return False  # a union always writes its branch index
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema == "null"
        # A record containing itself without a union cannot be written at all.
        return schema not in seen and _encodes_empty(named[schema], named, seen | {schema})
    kind = schema["type"]
    if kind == "fixed":
        return bool(schema["size"] == 0)
    if kind in ("record", "error"):
        inner = seen | {schema["name"]}
        return all(_encodes_empty(f["type"], named, inner) for f in schema["fields"])
    return False


def _malformed(message: str) -> DecodeError:
    return DecodeError(ReasonCode.MALFORMED_BODY, message)

"""Avro binary pieces for the fast workload writer, and raw-message files written by blocks.

`read_raw_message_file` reads such a file back about three times faster than fastavro's
record reader (which builds a datetime per timestamp): blocks come from fastavro, the four
fields of each record are decoded here.

Payload bodies are put together from pre-encoded pieces (varints, strings, enum indexes,
timestamps) rather than through fastavro's `schemaless_writer`, about 15 µs a record: the
pieces come from the schemas (`enum_index`), and `bench.workload` checks a sample of its
payloads against `connectors.avro_codec` before it finishes.

`RawMessageFileWriter` writes a raw-message container file (schemas/raw_message/v1.avsc)
with fastavro's own header, then cuts and compresses blocks the way fastavro's writer does:
a block is closed once its uncompressed records reach 16,000 bytes, and deflated at zlib's
default level. So a file is byte for byte what `connectors.avro_files.write_raw_messages`
writes for the same messages and sync marker, at a quarter of the cost.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastavro import block_reader
from fastavro import writer as avro_writer

from connectors.avro_codec import SINGLE_OBJECT_MAGIC
from connectors.avro_files import CODEC, RAW_MESSAGE_SUBJECT, SYNC_MARKER_SIZE
from connectors.schema_store import SchemaStore

# fastavro's Writer closes a block once its buffer holds sync_interval bytes (its default,
# 1000 * SYNC_SIZE).
SYNC_INTERVAL = 1000 * SYNC_MARKER_SIZE
# Every timestamp-millis between 1971-02 and 2039-09 is a 6-byte varint once zigzagged.
TIMESTAMP_BYTES = 6
_TIMESTAMP_MIN_MS = 1 << 34
_TIMESTAMP_MAX_MS = (1 << 41) - 1
# Union branch indexes as varints: branch 0 (null) and branch 1 (the value).
NULL_BRANCH = b"\x00"
VALUE_BRANCH = b"\x02"


def zigzag_varint(value: int) -> bytes:
    """Avro's encoding of an int or long: zigzag, then 7 bits a byte, low bits first."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Keys and values are far shorter than this (the pipeline's own limit is 1 MiB).
MAX_FIELD_BYTES = 1 << 16
_LENGTHS = tuple(zigzag_varint(n) for n in range(MAX_FIELD_BYTES))


def length_prefix(n: int) -> bytes:
    """The length that precedes an Avro string or bytes value."""
    return _LENGTHS[n] if n < len(_LENGTHS) else zigzag_varint(n)


def avro_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return length_prefix(len(data)) + data


def enum_index(schema: Any, field: str, symbol: str) -> bytes:
    """The encoded index of `symbol` in the enum of record field `field` of a parsed schema."""
    for entry in schema["fields"]:
        if entry["name"] == field:
            return zigzag_varint(list(entry["type"]["symbols"]).index(symbol))
    raise KeyError(f"{schema.get('name')} has no field {field!r}")


def single_object_header(subject: str, store: SchemaStore) -> bytes:
    """C3 01 and the 8-byte fingerprint of `subject`'s reader version (what it decodes with)."""
    return SINGLE_OBJECT_MAGIC + store.reader(subject).fingerprint


def timestamp_varints(millis: np.ndarray) -> bytes:
    """The 6-byte varints of epoch-millisecond timestamps, concatenated (value i at 6 i)."""
    ms = np.asarray(millis, dtype=np.int64)
    if ms.size and (ms.min() < _TIMESTAMP_MIN_MS or ms.max() > _TIMESTAMP_MAX_MS):
        raise ValueError("timestamps must lie between 1971 and 2039")
    zigzag = ms << 1
    columns = [((zigzag >> (7 * k)) & 0x7F) | 0x80 for k in range(TIMESTAMP_BYTES - 1)]
    columns.append(zigzag >> (7 * (TIMESTAMP_BYTES - 1)))
    return np.stack(columns, axis=1).astype(np.uint8).tobytes()


def fixed_digits(values: np.ndarray, width: int) -> bytes:
    """Zero-padded decimal digits of non-negative integers, `width` bytes each, concatenated."""
    v = np.asarray(values, dtype=np.int64)
    if v.size and (v.min() < 0 or v.max() >= 10**width):
        raise ValueError(f"values must have at most {width} digits")
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((v[:, None] // powers) % 10 + ord("0")).astype(np.uint8).tobytes()


class RawMessageFileWriter:
    """One raw-message container file, written block by block.

    `add` appends messages (keys and values shorter than MAX_FIELD_BYTES); `close()` writes
    the last block; `count` is the number of messages written.
    """

    def __init__(self, path: Path, store: SchemaStore, sync_marker: bytes) -> None:
        if len(sync_marker) != SYNC_MARKER_SIZE:
            raise ValueError(f"sync_marker must be {SYNC_MARKER_SIZE} bytes")
        self.path = path
        self.count = 0
        self._sync = sync_marker
        self._records: list[bytes] = []
        self._size = 0
        self._out: IO[bytes] = path.open("wb")
        # fastavro writes the header (schema JSON, codec, sync marker) and, given no
        # records, nothing else.
        avro_writer(
            self._out,
            store.reader(RAW_MESSAGE_SUBJECT).schema,
            [],
            codec=CODEC,
            sync_marker=sync_marker,
        )

    def add(self, topic: bytes, messages: list[tuple[bytes, bytes]], timestamps: bytes) -> None:
        """Append messages: `topic` encoded (`avro_string`), (key, value) pairs, and their
        arrival times as concatenated 6-byte varints (`timestamp_varints`)."""
        prefix = topic + VALUE_BRANCH
        lengths = _LENGTHS
        records, size = self._records, self._size
        join = b"".join
        for i, (key, value) in enumerate(messages):
            t = i * TIMESTAMP_BYTES
            record = join(
                (
                    prefix,
                    lengths[len(key)],
                    key,
                    lengths[len(value)],
                    value,
                    VALUE_BRANCH,
                    timestamps[t : t + TIMESTAMP_BYTES],
                )
            )
            records.append(record)
            size += len(record)
            if size >= SYNC_INTERVAL:
                self._size = size
                self._flush()
                records, size = self._records, 0
        self._size = size
        self.count += len(messages)

    def _flush(self) -> None:
        if not self._records:
            return
        # zlib's stream minus its 2-byte header and last byte, as fastavro writes deflate.
        data = zlib.compress(b"".join(self._records))[2:-1]
        self._out.write(zigzag_varint(len(self._records)))
        self._out.write(zigzag_varint(len(data)))
        self._out.write(data)
        self._out.write(self._sync)
        self._records = []
        self._size = 0

    def close(self) -> None:
        self._flush()
        self._out.close()

    def __enter__(self) -> RawMessageFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_RAW_FIELDS = ["topic", "key", "value", "timestamp"]


def read_raw_message_file(path: Path) -> Iterator[tuple[str, bytes | None, bytes, int | None]]:
    """(topic, key, value, timestamp ms or None) of each record of a raw-message file.

    Raises ValueError for a file written with another schema than raw_message/v1.
    """
    topics: dict[bytes, str] = {}
    with path.open("rb") as source:
        blocks = block_reader(source)
        schema = blocks.metadata.get("avro.schema", "{}")
        fields = [f.get("name") for f in json.loads(schema).get("fields", [])]
        if fields != _RAW_FIELDS:
            raise ValueError(f"{path}: not a raw-message file (fields {fields})")
        for block in blocks:
            buf = block.bytes_.getvalue()
            pos = 0
            for _ in range(block.num_records):
                # Single-byte varints (short topics and keys, union branches) inline.
                n = buf[pos]
                if n < 0x80:
                    n, pos = n >> 1, pos + 1
                else:
                    n, pos = _long(buf, pos)
                raw_topic = buf[pos : pos + n]
                pos += n
                topic = topics.get(raw_topic)
                if topic is None:
                    topic = topics[raw_topic] = raw_topic.decode("utf-8")
                key = None
                if buf[pos] == 2:  # union branch 1: bytes
                    n = buf[pos + 1]
                    if n < 0x80:
                        n, pos = n >> 1, pos + 2
                    else:
                        n, pos = _long(buf, pos + 1)
                    key = buf[pos : pos + n]
                    pos += n
                elif buf[pos] == 0:
                    pos += 1
                else:
                    raise ValueError(f"{path}: bad key union branch at byte {pos} of a block")
                n, pos = _long(buf, pos)
                value = buf[pos : pos + n]
                pos += n
                timestamp = None
                if buf[pos] == 2:
                    timestamp, pos = _long(buf, pos + 1)
                elif buf[pos] == 0:
                    pos += 1
                else:
                    raise ValueError(f"{path}: bad timestamp union branch at byte {pos}")
                yield topic, key, value, timestamp


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at `pos`, and the position after it."""
    byte = buf[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos

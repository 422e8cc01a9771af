"""Compiled readers for flat Avro records: the decoder's fast path.

In: a fastavro-parsed writer schema and the reader schema its records resolve to (None:
the writer itself). Out: a reader, `(payload, start) -> record dict | None` for the body
that fills `payload` from `start`, or None when the schemas are not flat. Flat means a
record whose fields are primitives, timestamp-millis longs, enums, or a union of null and
one of those: every event schema of this project.

A reader is specialised Python source, generated once per (writer, reader) pair: one
straight run of field reads with the checks inlined, instead of a walk over the schema per
value. It is an accept-only shortcut for `avro_codec.decode`: it returns the record only
when the body is exactly one value of the writer schema, strictly encoded (the checks of
`avro_codec._BodyScanner`: lengths, union and enum indexes, booleans, int range, UTF-8,
nothing left over), and the record is what fastavro would give for it: the same values,
keys in the same order, defaults for the reader fields the writer lacks. For anything
else it returns None, without saying why: a malformed body, a symbol the reader lacks, a
timestamp out of datetime's range, and also a few valid encodings left to the general
path for simplicity (a varint of 10 bytes, a union index written in more than one
byte). The caller then decodes the body the checked way, which gives the verdict and
its reason, so a reader never decides a refusal.

Example: for removal.actions-value v1 with itself as reader, the reader called with a
Confluent payload and start 5, b"\\x00\\x00\\x00\\x00\\x02\\x08ac-1...", returns
{"event_id": "ac-1", ..., "acted_at": datetime(..., tzinfo=UTC)}.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

FlatReader = Callable[[bytes, int], dict[str, Any] | None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIMPLE = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# Values a default may have for the reader to hand it out as fastavro does (the schema's
# own object, shared by every record): immutable ones only.
_IMMUTABLE_DEFAULTS = (str, int, float, bool, type(None))
# Varints of up to 9 bytes (63 bits) read the same in any reader; longer ones go to the
# checked path, which also knows the 64-bit limit.
_MAX_FAST_SHIFT = 56


class _Refused(Exception):
    """Raised inside a compiled reader: this body is not for the fast path."""


def _long_tail(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a zigzag varint whose first byte (`first`, read at pos - 1) has the
    continuation bit: (value, position after it)."""
    acc = first & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        acc |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7
        if shift > _MAX_FAST_SHIFT:
            raise _Refused


# Shapes: ("null",), ("boolean",), ... for the simple types; ("timestamp-millis",);
# ("enum", full name, symbols); ("union", null branch index, shape of the other branch).
_Shape = tuple[Any, ...]


def _shape(schema: Any) -> _Shape | None:
    """The shape of a field type, or None when the fast path does not handle it."""
    if isinstance(schema, str):
        return (schema,) if schema in _SIMPLE else None
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        null_index = schema.index("null")
        other = _shape(schema[1 - null_index])
        if other is None or other[0] in ("null", "union"):
            return None
        return ("union", null_index, other)
    if not isinstance(schema, Mapping):
        return None
    kind = schema.get("type")
    if not isinstance(kind, str):
        return None
    logical = schema.get("logicalType")
    if logical is not None:
        return ("timestamp-millis",) if (kind, logical) == ("long", "timestamp-millis") else None
    if kind in _SIMPLE:
        return (kind,)
    if kind == "enum":
        return ("enum", schema["name"], tuple(schema["symbols"]))
    return None


def _resolved(writer: _Shape, reader: _Shape) -> _Shape | None:
    """The shape to read a `writer` value with so that it comes out as `reader`'s, or None.

    Only identical shapes, and enums of one name whose symbols differ: a symbol the reader
    lacks is then left to the checked path (the reader's default, or UNKNOWN_ENUM_SYMBOL).
    """
    if writer == reader:
        return writer
    if writer[0] == reader[0] == "enum" and writer[1] == reader[1]:
        known = set(reader[2])
        return ("enum", writer[1], tuple(s if s in known else None for s in writer[2]))
    return None


def compile_reader(writer: Any, reader: Any | None) -> FlatReader | None:
    """A reader for bodies written with `writer`, resolved to `reader` (None: no
    resolution), or None when the pair is not flat."""
    if not _is_plain_record(writer):
        return None
    steps: list[tuple[str | None, _Shape]] = []  # (key in the record or None, shape)
    defaults: list[tuple[str, Any]] = []
    if reader is None:
        for field in writer["fields"]:
            shape = _shape(field["type"])
            if shape is None:
                return None
            steps.append((field["name"], shape))
    else:
        if not _is_plain_record(reader) or reader["name"] != writer["name"]:
            return None
        if any("aliases" in f for f in reader["fields"]):
            return None
        reader_fields = {f["name"]: f for f in reader["fields"]}
        for field in writer["fields"]:
            shape = _shape(field["type"])
            if shape is None:
                return None
            target = reader_fields.pop(field["name"], None)
            if target is None:  # read to check it, then dropped (Avro resolution)
                steps.append((None, shape))
                continue
            target_shape = _shape(target["type"])
            resolved = None if target_shape is None else _resolved(shape, target_shape)
            if resolved is None:
                return None
            steps.append((field["name"], resolved))
        for name, field in reader_fields.items():
            if "default" not in field or not isinstance(field["default"], _IMMUTABLE_DEFAULTS):
                return None
            defaults.append((name, field["default"]))
    return _generate(steps, defaults)


def _is_plain_record(schema: Any) -> bool:
    return (
        isinstance(schema, Mapping)
        and schema.get("type") == "record"
        and "aliases" not in schema
        and isinstance(schema.get("fields"), list)
    )


def _generate(
    steps: list[tuple[str | None, _Shape]], defaults: list[tuple[str, Any]]
) -> FlatReader:
    namespace: dict[str, Any] = {
        "_Refused": _Refused,
        "_long_tail": _long_tail,
        "_EPOCH": _EPOCH,
        "_timedelta": timedelta,
        "_float": struct.Struct("<f").unpack_from,
        "_double": struct.Struct("<d").unpack_from,
    }
    body: list[str] = []
    entries: list[str] = []
    for i, (key, shape) in enumerate(steps):
        target = f"v{i}"
        _read_value(shape, target, body, namespace, "")
        if key is not None:
            entries.append(f"{key!r}: {target}")
    for i, (key, value) in enumerate(defaults):
        namespace[f"_default{i}"] = value
        entries.append(f"{key!r}: _default{i}")
    lines = [
        "def read(buf, pos):",
        "    size = len(buf)",
        "    try:",
        *("        " + line for line in body),
        # IndexError: the body or a symbol list ended early; ValueError: invalid UTF-8;
        # OverflowError: a timestamp outside datetime's range.
        "    except (_Refused, IndexError, ValueError, OverflowError):",
        "        return None",
        "    if pos != size:",
        "        return None",
        "    return {" + ", ".join(entries) + "}",
    ]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<avro_flat reader>", "exec"), namespace)
    read: FlatReader = namespace["read"]
    read.__doc__ = source  # what it does, for whoever debugs it
    return read


def _varint(target: str, out: list[str], indent: str) -> None:
    out += [
        f"{indent}b = buf[pos]",
        f"{indent}pos += 1",
        f"{indent}if b & 0x80:",
        f"{indent}    {target}, pos = _long_tail(buf, pos, b)",
        f"{indent}else:",
        f"{indent}    {target} = (b >> 1) ^ -(b & 1)",
    ]


def _read_value(
    shape: _Shape, target: str, out: list[str], namespace: dict[str, Any], indent: str
) -> None:
    """Append the lines that read one `shape` value into local `target`."""
    kind = shape[0]
    if kind == "null":
        out.append(f"{indent}{target} = None")
    elif kind == "boolean":
        out += [
            f"{indent}b = buf[pos]",
            f"{indent}pos += 1",
            f"{indent}if b > 1:",
            f"{indent}    raise _Refused",
            f"{indent}{target} = b == 1",
        ]
    elif kind in ("int", "long", "timestamp-millis"):
        _varint(target, out, indent)
        if kind == "int":
            out += [
                f"{indent}if not -0x80000000 <= {target} <= 0x7FFFFFFF:",
                f"{indent}    raise _Refused",
            ]
        elif kind == "timestamp-millis":  # as fastavro converts it
            out.append(f"{indent}{target} = _EPOCH + _timedelta(0, 0, {target} * 1000)")
    elif kind in ("float", "double"):
        width = 4 if kind == "float" else 8
        out += [
            f"{indent}if pos + {width} > size:",
            f"{indent}    raise _Refused",
            f"{indent}{target} = _{kind}(buf, pos)[0]",
            f"{indent}pos += {width}",
        ]
    elif kind in ("string", "bytes"):
        _varint("n", out, indent)
        out += [
            f"{indent}end = pos + n",
            f"{indent}if n < 0 or end > size:",
            f"{indent}    raise _Refused",
            f"{indent}{target} = "
            + ("buf[pos:end].decode()" if kind == "string" else "bytes(buf[pos:end])"),
            f"{indent}pos = end",
        ]
    elif kind == "enum":
        symbols = f"_symbols_{target}"
        namespace[symbols] = shape[2]
        _varint("n", out, indent)
        out += [
            f"{indent}if n < 0:",
            f"{indent}    raise _Refused",
            f"{indent}{target} = {symbols}[n]",
        ]
        if None in shape[2]:
            out += [f"{indent}if {target} is None:", f"{indent}    raise _Refused"]
    elif kind == "union":
        # A one-byte index: 0 is branch 0, 2 (zigzag 1) branch 1.
        null_byte, value_byte = (0, 2) if shape[1] == 0 else (2, 0)
        out += [
            f"{indent}b = buf[pos]",
            f"{indent}pos += 1",
            f"{indent}if b == {null_byte}:",
            f"{indent}    {target} = None",
            f"{indent}elif b == {value_byte}:",
        ]
        _read_value(shape[2], target, out, namespace, indent + "    ")
        out += [f"{indent}else:", f"{indent}    raise _Refused"]
    else:  # _shape produced it, so this is a bug
        raise AssertionError(f"unexpected shape {shape!r}")

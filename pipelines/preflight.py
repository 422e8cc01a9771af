"""Checks `removal-audit run` and `publish` make before any pipeline work: that every input
is a whole Avro container file of raw messages, and that the database can be written.

A wrong input or database would otherwise surface only from inside the pipeline, after its
work (tens of seconds on the demo's files), as a runner's traceback. Each check raises
`PreflightError` with one line naming what is wrong and what the command expects.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
from fastavro.schema import to_parsing_canonical_form

from connectors.avro_files import RAW_MESSAGE_SUBJECT, AvroFileError, scan_container
from connectors.duckdb_reader import wal_path
from connectors.schema_store import SchemaStore, schema_fingerprint

EXPECTED_INPUT = (
    "input files are Avro container files of raw messages (schemas/raw_message/v1.avsc), "
    "as `removal-audit generate` writes them"
)


class PreflightError(ValueError):
    """An input or database a command cannot use; the message names it and says why."""


def input_files(paths: Sequence[Path], store: SchemaStore) -> list[Path]:
    """The files `paths` name (a directory: its *.avro files), each checked with
    `check_input`. FileNotFoundError for a missing path or when no file is found."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.avro"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such input file or directory: {path}")
    if not files:
        raise FileNotFoundError(
            "no .avro input files found; create some with `removal-audit generate`"
        )
    for file in files:
        check_input(file, store)
    return files


def check_input(path: Path, store: SchemaStore) -> int:
    """Check that `path` is a whole container file written with a raw-message schema of the
    catalog; return its number of messages. Raises PreflightError."""
    try:
        scan = scan_container(path)
    except AvroFileError as error:
        raise PreflightError(f"{error}; {EXPECTED_INPUT}") from error
    canonical = to_parsing_canonical_form(scan.writer_schema)
    known = store.by_fingerprint(schema_fingerprint(canonical))
    if known is None:
        name = scan.writer_schema.get("name") if isinstance(scan.writer_schema, dict) else None
        written = f"record {name}" if name else "a schema"
        raise PreflightError(
            f"{path}: written with {written} the schema catalog does not know, not a "
            f"raw message; {EXPECTED_INPUT}"
        )
    if known.subject != RAW_MESSAGE_SUBJECT:
        raise PreflightError(
            f"{path}: holds plain {known.label} events, not raw messages; {EXPECTED_INPUT}"
        )
    return scan.records


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def check_database(database: Path) -> None:
    """Check that `database` can be opened for writing: not a directory, not another
    process's (DuckDB has one writer per file), a DuckDB file or none yet. What the probe
    creates (the file, missing parent directories) is removed again. Raises
    PreflightError."""
    if database.is_dir():
        raise PreflightError(
            f"database {database} is a directory; the database is a DuckDB file, e.g. "
            f"--db {database / 'removal-audit.duckdb'}"
        )
    created = [p for p in (database, *database.parents) if not p.exists()]
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove(created)
        blocking = next((p for p in database.parents if p.exists()), None)
        why = (
            f"{blocking} is not a directory"
            if blocking is not None and not blocking.is_dir()
            else error.strerror or str(error)
        )
        raise PreflightError(f"database {database}: cannot create its directory: {why}") from error
    wal = wal_path(database)
    if not wal.exists():
        created.insert(0, wal)
    try:
        duckdb.connect(str(database)).close()
    except duckdb.Error as error:
        raise PreflightError(_database_problem(database, error)) from error
    finally:
        _remove(created)


def _database_problem(database: Path, error: duckdb.Error) -> str:
    message = str(error).removeprefix("IO Error: ")
    holder = _LOCK_HOLDER.search(message)
    if holder is not None:
        return (
            f"database {database} is open in another process ({holder['program']}, "
            f"PID {holder['pid']}; a running streaming job?): a DuckDB file has one writer "
            "at a time; stop that process or give another --db"
        )
    return f"database {database} cannot be opened for writing: {message}"


def _remove(created: Sequence[Path]) -> None:
    """Remove what the probe created, deepest first (files, then the directories)."""
    for path in created:
        # A leftover is only untidy; the check's own answer matters more.
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)

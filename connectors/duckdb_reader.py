"""Auditor access to DuckDB: read-only, no file or network access, canned queries.

`connect_auditor` opens the database read-only with `enable_external_access = false`
and then locks the configuration, so a query can neither write the database, nor read
or write any other file (read_csv, COPY ... TO, ATTACH, EXPORT), nor load extensions,
nor turn those settings back on. It sees every committed row, those still in the
database's WAL included, and runs under the session's limits (`duckdb_limits`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from connectors.duckdb_limits import AuditorLimits, enforced
from connectors.owned_paths import owned_name, remove_dead_owners
from pipelines.resources import sql_dir

_PARAM = re.compile(r"^--\s*@param\s+(\w+)\b(.*)$")
_DEFAULT = re.compile(r"\(default\s+([^)]+)\)")


class QueryError(ValueError):
    """A canned query that does not exist or lacks a parameter."""


class DatabaseInUse(QueryError):
    """The database is held by another process's writer (DuckDB has one writer per file, and
    a read-only connection waits for none)."""


_PIN_ATTEMPTS = 50  # links tried while snapshots are renamed over the path


def wal_path(database: Path) -> Path:
    """The write-ahead log DuckDB keeps beside `database`: commits not checkpointed yet."""
    return database.with_name(f"{database.name}.wal")


def _link(source: Path, link: Path) -> bool:
    """Hard-link `source`'s current file at `link`; False when `source` is not there.

    A link made while the writer renames the next snapshot over the path can fail with
    ENOENT although the path exists: it had found the previous copy, which the rename then
    unlinked. That is retried (it finds the new copy)."""
    for _ in range(_PIN_ATTEMPTS):
        try:
            os.link(source, link)
        except FileNotFoundError:
            if not source.exists():
                return False
            continue
        return True
    return False


def _pin(database: Path) -> Path | None:
    """Hard links to `database`'s current file and to its WAL, if it has one, under the
    same names in a new private directory beside it; the path of the file's link, or None
    when they cannot be made (no write access to the directory, no hard links there).

    DuckDB reads the WAL of the path it opens (`<path>.wal`), and a read-only connection
    replays it in memory, leaving both files as they are: the WAL holds commits not
    checkpointed yet (e.g. of a writer killed while landing). Snapshots are published
    checkpointed and never have one; a database with one is the writer's, never renamed
    over, so its file and WAL linked one after the other belong together."""
    remove_dead_readers(database)
    pins = database.with_name(owned_name(_PIN_PREFIX.format(name=database.name)))
    try:
        pins.mkdir(mode=0o700)
        if _link(database, pins / database.name):
            _link(wal_path(database), wal_path(pins / database.name))
            return pins / database.name
    except OSError:
        pass
    shutil.rmtree(pins, ignore_errors=True)
    return None


_PIN_PREFIX = ".{name}.reader-"


def remove_dead_readers(database: Path) -> None:
    """Remove the pins that readers of `database` killed while connecting left beside it
    (each holds a link to a copy of the database, whose space it would keep): every reader
    does this, and so does the writer that publishes a snapshot, so they go even when no
    reader comes."""
    remove_dead_owners(database.parent, _PIN_PREFIX.format(name=database.name))


_SPILL_PREFIX = "removal-audit-auditor-"


def _spill_directory() -> Path:
    """A new private directory for the session's spills, in the system's temporary
    directory: the database's directory may be small, shared, or not writable."""
    parent = Path(tempfile.gettempdir())
    remove_dead_owners(parent, _SPILL_PREFIX)
    path = parent / owned_name(_SPILL_PREFIX)
    path.mkdir(mode=0o700)
    return path


def connect_auditor(
    database: Path, limits: AuditorLimits | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to `database` under `limits` (default: AuditorLimits());
    run statements in `enforced(con, limits)` for their timeout."""
    limits = AuditorLimits() if limits is None else limits
    if not database.is_file():
        raise FileNotFoundError(
            f"no audit database at {database}: run `removal-audit run` (or `make demo`) first"
        )
    # DuckDB opens the file several times while connecting (header, catalog, blocks): a
    # snapshot the writer replaces in between (a rename over the path) would pair one copy's
    # header with another's blocks. Private hard links pin one copy for all of them; they
    # are removed once connected (the open handles keep the copy). Because the connection
    # names the removed links, not the database, its own paths (`<db>.wal`, ...) that
    # DuckDB still lets it write are gone too. Without write access to the directory, the
    # path itself is opened.
    pinned = _pin(database)
    spill = _spill_directory()
    try:
        con = duckdb.connect(
            str(pinned or database),
            read_only=True,
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
    except BaseException as error:
        shutil.rmtree(spill, ignore_errors=True)
        if isinstance(error, duckdb.IOException) and "Could not set lock" in str(error):
            # DuckDB's message names the pinning link, not the database.
            snapshot = database.with_name(f"{database.stem}.snapshot.duckdb")
            raise DatabaseInUse(
                f"{database} is open in another process's writer (a running streaming job?): "
                f"use the read-only snapshot it publishes, --db {snapshot}"
            ) from None
        raise
    finally:
        if pinned is not None:
            shutil.rmtree(pinned.parent, ignore_errors=True)
    # DuckDB leaves a directory it did not create; this one goes with the connection.
    weakref.finalize(con, shutil.rmtree, spill, ignore_errors=True)
    # Set before external access is disabled, which freezes the spill settings (and
    # DuckDB 2.0 did not enforce `max_temp_directory_size` given in the connect config: a
    # query spilled 200 MB past a 16 MB cap). No query has run yet.
    for statement in (
        "SET temp_directory = '" + str(spill).replace("'", "''") + "'",
        f"SET max_temp_directory_size = '{int(limits.temp_limit_mb)}MB'",
        f"SET memory_limit = '{int(limits.memory_limit_mb)}MB'",
        "SET TimeZone = 'UTC'",
        # These would show the machine's home directory to a query of duckdb_settings().
        "SET secret_directory = ''",
        "SET home_directory = ''",
        "SET extension_directory = ''",
        "SET enable_external_access = false",
    ):
        con.execute(statement)
    con.execute("SET lock_configuration = true")
    return con


@dataclass(frozen=True)
class CannedQuery:
    """A query file of `sql/queries/`: its header comment (grain, `-- @param` lines) and SQL.

    Example: CannedQuery(name="unresolved_by_category", params={"as_of": None}, ...)
    (a None default means the parameter is required)."""

    name: str
    path: Path
    sql: str
    description: str
    params: Mapping[str, str | None]

    def bind(self, given: Mapping[str, str]) -> dict[str, str]:
        unknown = set(given) - set(self.params)
        if unknown:
            raise QueryError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}")
        bound: dict[str, str] = {}
        for name, default in self.params.items():
            value = given.get(name, default)
            if value is None:
                raise QueryError(
                    f"{self.name}: parameter {name!r} is required (--param {name}=...)"
                )
            bound[name] = value
        return bound


def read_query_file(path: Path) -> CannedQuery:
    text = path.read_text(encoding="utf-8")
    params: dict[str, str | None] = {}
    description: list[str] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _PARAM.match(line)
        if match:
            default = _DEFAULT.search(match.group(2))
            params[match.group(1)] = default.group(1).strip() if default else None
        else:
            description.append(line.lstrip("- ").rstrip())
    return CannedQuery(path.stem, path, text, " ".join(d for d in description if d), params)


def canned_queries() -> dict[str, CannedQuery]:
    return {q.name: q for q in map(read_query_file, sorted((sql_dir() / "queries").glob("*.sql")))}


def run_sql(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Mapping[str, Any] | None = None,
    limits: AuditorLimits | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Execute one statement (under `limits`' timeout, when given); return (column names,
    rows); statements without a result give ([], [])."""
    if limits is not None:
        with enforced(con, limits):
            return run_sql(con, sql, params)
    cursor = con.execute(sql, dict(params) if params else None)
    if cursor.description is None:
        return [], []
    columns = [d[0] for d in cursor.description]
    return columns, cursor.fetchall()

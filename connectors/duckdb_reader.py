"""Auditor access to DuckDB: read-only, no file or network access, canned queries.

`connect_auditor` opens the database read-only with `enable_external_access = false`
and then locks the configuration, so a query can neither write the database, nor read
or write any other file (read_csv, COPY ... TO, ATTACH, EXPORT), nor load extensions,
nor turn those settings back on.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipelines.resources import sql_dir

_PARAM = re.compile(r"^--\s*@param\s+(\w+)\b(.*)$")
_DEFAULT = re.compile(r"\(default\s+([^)]+)\)")


class QueryError(ValueError):
    """A canned query that does not exist or lacks a parameter."""


_PIN_ATTEMPTS = 50  # links tried while snapshots are renamed over the path


def _pin(database: Path) -> Path | None:
    """A new hard link to `database`'s current file, beside it; None when it cannot be made.

    A link made while the writer renames the next snapshot over the path can fail with
    ENOENT although the path exists: it had found the previous copy, which the rename then
    unlinked. That is retried (it finds the new copy); other failures (no write access to
    the directory, a file system without hard links) give None."""
    link = database.with_name(f".{database.name}.reader-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    for _ in range(_PIN_ATTEMPTS):
        try:
            os.link(database, link)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return link
    return None


def connect_auditor(database: Path) -> duckdb.DuckDBPyConnection:
    if not database.is_file():
        raise FileNotFoundError(
            f"no audit database at {database}: run `removal-audit run` (or `make demo`) first"
        )
    # DuckDB opens the file several times while connecting (header, catalog, blocks): a
    # snapshot the writer replaces in between (a rename over the path) would pair one copy's
    # header with another's blocks. A private hard link pins one copy for all of them; it
    # is removed once connected (the open handle keeps the copy). Without write access to
    # the directory, the path itself is opened.
    pinned = _pin(database)
    try:
        con = duckdb.connect(
            str(pinned or database),
            read_only=True,
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
    finally:
        if pinned is not None:
            pinned.unlink(missing_ok=True)
    con.execute("SET TimeZone = 'UTC'")
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
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Execute one statement; return (column names, rows); statements without a result
    give ([], [])."""
    cursor = con.execute(sql, dict(params) if params else None)
    if cursor.description is None:
        return [], []
    columns = [d[0] for d in cursor.description]
    return columns, cursor.fetchall()

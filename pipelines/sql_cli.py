"""`removal-audit sql`: auditors' read-only SQL over the audit database.

Runs one statement given on the command line, a file, or a canned query of `sql/queries/`
with `--param name=value`; with none of these, an interactive shell. The connection is
`connectors.duckdb_reader.connect_auditor`: read-only, no external access.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb

from connectors.duckdb_reader import QueryError, canned_queries, connect_auditor, run_sql


def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """A plain aligned text table; numbers right-aligned."""
    if not columns:
        return
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out.write(line(columns) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def write_result(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, out: TextIO
) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[format_value(v) for v in row] for row in rows])
    elif fmt == "json":
        for row in rows:
            out.write(json.dumps(dict(zip(columns, row, strict=True)), default=format_value) + "\n")
    else:
        print_table(columns, rows, out)


def run_sql_command(
    database: Path,
    *,
    statement: str | None,
    file: Path | None,
    canned: str | None,
    params: dict[str, str],
    fmt: str,
    out: TextIO | None = None,
) -> int:
    """The `sql` subcommand; returns the exit status. Writes to `out` (default: the
    current sys.stdout, looked up at call time)."""
    out = sys.stdout if out is None else out
    sources = [s for s in (statement, file, canned) if s is not None]
    if len(sources) > 1:
        raise QueryError("give one of: a statement, --file, --canned")
    con = connect_auditor(database)
    try:
        if canned is not None:
            queries = canned_queries()
            if canned not in queries:
                raise QueryError(f"no canned query {canned!r}; known: {', '.join(sorted(queries))}")
            query = queries[canned]
            columns, rows = run_sql(con, query.sql, query.bind(params))
        elif file is not None or statement is not None:
            text = file.read_text(encoding="utf-8") if file is not None else str(statement)
            columns, rows = run_sql(con, text, params or None)
        else:
            return shell(con, fmt, sys.stdin, out)
        write_result(columns, rows, fmt, out)
        return 0
    finally:
        con.close()


def shell(con: duckdb.DuckDBPyConnection, fmt: str, stdin: TextIO, out: TextIO) -> int:
    """A minimal SQL shell: statements end with ';'; `.tables`, `.queries`, `.quit`."""
    interactive = stdin.isatty()
    if interactive:
        out.write("removal-audit sql (read-only). End statements with ';'. .help for help.\n")
    buffer: list[str] = []
    while True:
        if interactive:
            out.write("audit> " if not buffer else "  ...> ")
            out.flush()
        line = stdin.readline()
        if not line:
            return 0
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            if stripped in (".quit", ".exit"):
                return 0
            if stripped == ".tables":
                write_result(*run_sql(con, "SHOW TABLES"), fmt, out)
            elif stripped == ".queries":
                for q in canned_queries().values():
                    out.write(f"{q.name}: {q.description}\n")
            else:
                out.write(".tables  .queries  .quit\n")
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            try:
                write_result(*run_sql(con, "".join(buffer)), fmt, out)
            except duckdb.Error as error:
                out.write(f"error: {error}\n")
            buffer.clear()

"""`removal-audit sql`: auditors' read-only SQL over the audit database.

Runs one statement given on the command line, a file, or a canned query of `sql/queries/`
with `--param name=value`; with none of these, an interactive shell. The connection is
`connectors.duckdb_reader.connect_auditor`: read-only, no external access, every statement
under the session's limits (memory, temporary space, time: `connectors.duckdb_limits`).
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

from connectors.duckdb_limits import AuditorLimits, QueryStopped
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
        # csv's default line end is "\r\n"; the rest of the output, and the tools it is
        # piped to, use "\n".
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[format_value(v) for v in row] for row in rows])
    elif fmt == "json":
        for row in rows:
            out.write(json.dumps(dict(zip(columns, row, strict=True)), default=format_value) + "\n")
    else:
        print_table(columns, rows, out)


def read_sql_file(con: duckdb.DuckDBPyConnection, file: Path) -> str:
    """The SQL text of `file`. Anything else (a directory, bytes that are not UTF-8, text
    DuckDB cannot parse) is refused without a word of its content: the parser's message
    would quote the first line of whatever file was named (`--file /etc/shadow`)."""
    if file.is_dir():
        raise QueryError(f"--file {file} is a directory, not a file of SQL")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise QueryError(f"--file {file} is not UTF-8 text") from None
    try:
        con.extract_statements(text)
    except duckdb.ParserException:
        raise QueryError(f"--file {file} does not parse as SQL") from None
    return text


def run_sql_command(
    database: Path,
    *,
    statement: str | None,
    file: Path | None,
    canned: str | None,
    params: dict[str, str],
    fmt: str,
    limits: AuditorLimits | None = None,
    out: TextIO | None = None,
) -> int:
    """The `sql` subcommand; returns the exit status. Writes to `out` (default: the
    current sys.stdout, looked up at call time)."""
    out = sys.stdout if out is None else out
    limits = AuditorLimits() if limits is None else limits
    sources = [s for s in (statement, file, canned) if s is not None]
    if len(sources) > 1:
        raise QueryError("give one of: a statement, --file, --canned")
    con = connect_auditor(database, limits)
    try:
        if canned is not None:
            queries = canned_queries()
            if canned not in queries:
                raise QueryError(f"no canned query {canned!r}; known: {', '.join(sorted(queries))}")
            query = queries[canned]
            columns, rows = run_sql(con, query.sql, query.bind(params), limits)
        elif file is not None or statement is not None:
            text = read_sql_file(con, file) if file is not None else str(statement)
            columns, rows = run_sql(con, text, params or None, limits)
        else:
            return shell(con, fmt, sys.stdin, out, limits)
        # A reader that stops reading (`sql ... | head`) is the console script's to handle
        # (pipelines.cli.entry): quietly, with exit status 141.
        write_result(columns, rows, fmt, out)
        return 0
    finally:
        con.close()


def shell(
    con: duckdb.DuckDBPyConnection,
    fmt: str,
    stdin: TextIO,
    out: TextIO,
    limits: AuditorLimits | None = None,
) -> int:
    """A minimal SQL shell: statements end with ';' (the last one may end with the input);
    `.tables`, `.queries`, `.quit`. Returns 1 when reading a script (not a terminal) and a
    statement of it failed, else 0."""
    interactive = stdin.isatty()
    if interactive:
        out.write("removal-audit sql (read-only). End statements with ';'. .help for help.\n")
    buffer: list[str] = []
    failed = False

    def execute(sql: str) -> None:
        nonlocal failed
        try:
            write_result(*run_sql(con, sql, None, limits), fmt, out)
        except (duckdb.Error, QueryStopped) as error:
            out.write(f"error: {error}\n")
            failed = True

    while True:
        if interactive:
            out.write("audit> " if not buffer else "  ...> ")
            out.flush()
        line = stdin.readline()
        if not line:
            if "".join(buffer).strip():
                execute("".join(buffer))
            break
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            if stripped in (".quit", ".exit"):
                break
            if stripped == ".tables":
                execute("SHOW TABLES")
            elif stripped == ".queries":
                for q in canned_queries().values():
                    out.write(f"{q.name}: {q.description}\n")
            else:
                out.write(".tables  .queries  .quit\n")
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            execute("".join(buffer))
            buffer.clear()
    return 1 if failed and not interactive else 0

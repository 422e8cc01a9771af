"""DuckDB: derive `backlog_daily` in SQL from the landed `requests` and `lifecycle_transitions`.

The streaming path lands requests and their transitions incrementally; the daily backlog is
a function of all of them, so it is recomputed whole by `sql/derive/backlog_daily.sql`, which
gives exactly the rows the batch pipeline's `BacklogByCategory` writes.

Example:
    con = connect_writer(Path("audit.duckdb"))
    con.begin()
    ...                                   # land requests and lifecycle_transitions
    refresh_backlog_daily(con, None)      # -> 10993 (rows now in backlog_daily)
    con.commit()
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from pipelines.resources import sql_dir


def backlog_daily_sql() -> str:
    """The derivation's SELECT (parameter `$through`), without a trailing semicolon."""
    path = sql_dir() / "derive" / "backlog_daily.sql"
    return path.read_text(encoding="utf-8").rstrip().rstrip(";")


def refresh_backlog_daily(con: duckdb.DuckDBPyConnection, through: datetime | None) -> int:
    """Replace the contents of `backlog_daily` with the rows derived from `requests` and
    `lifecycle_transitions`, as_of <= `through` only (None: every row); return the row count.

    It neither begins nor commits: run it inside the transaction that lands the requests and
    transitions, so readers see the backlog change with them. Outside a transaction DuckDB
    autocommits the DELETE and the INSERT separately and a reader may see the table empty.

    `through` must be timezone-aware (a naive datetime would be read in the session TimeZone).
    Example (seed scenario): refresh_backlog_daily(con, datetime(2021, 3, 1, tzinfo=UTC))
    -> 10573, the rows as_of 2017-01-02 .. 2021-03-01.
    """
    if through is not None and through.utcoffset() is None:
        raise ValueError(f"through must be timezone-aware, got {through!r}")
    con.execute("DELETE FROM backlog_daily")
    inserted = con.execute(
        f"INSERT INTO backlog_daily BY NAME\n{backlog_daily_sql()}", {"through": through}
    ).fetchone()
    assert inserted is not None
    return int(inserted[0])

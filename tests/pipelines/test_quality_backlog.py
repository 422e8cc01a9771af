"""The backlog_daily suite recounts the backlog with a span join, not by calling the
request_status_as_of macro once per sample day: its recount must be the macro's, row for
row, on the seed audit and on histories built to hit the edges (transitions at one instant,
a reopened request, withdrawn, declined, a deadline or a transition exactly at a sample
midnight, time going back within a history, a transition of a request never landed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors import duckdb_quality as dq
from connectors.duckdb_sink import connect_writer
from pipelines.quality import load_suites

# The recount as the suite first wrote it: the macro itself, once per sample day (the same
# sample days as the suite's query).
MACRO_RECOUNT = """
WITH days AS (
    SELECT DISTINCT as_of FROM backlog_daily
), sample AS (
    SELECT as_of FROM (
        SELECT as_of, row_number() OVER (ORDER BY as_of) AS n, count(*) OVER () AS total
        FROM days
    )
    WHERE n = total OR n % greatest(total // 12, 1) = 0
)
SELECT s.as_of, r.category, r.platform, r.authority,
       count(*) FILTER (WHERE r.status = 'OPEN') AS open,
       count(*) FILTER (WHERE r.status = 'OVERDUE') AS overdue,
       count(*) FILTER (WHERE r.status = 'DECLINED') AS declined
FROM sample AS s, LATERAL (SELECT * FROM request_status_as_of(s.as_of)) AS r
GROUP BY ALL
"""

Key = tuple[Any, str, str, str]


def _suite_query() -> str:
    (suite,) = [s for s in load_suites() if s.name == "backlog_daily"]
    return suite.query


def _recounts(con: duckdb.DuckDBPyConnection) -> tuple[dict[Key, tuple[int, int, int]], ...]:
    """(the suite's recount, the macro's), each {(as_of, category, platform, authority):
    (open, overdue, declined)}."""
    dq.set_scope(con, None)
    suite = {
        (row[0], row[1], row[2], row[3]): (row[4], row[5], row[6])
        for row in con.execute(
            "SELECT as_of, category, platform, authority, recounted_open, recounted_overdue, "
            f"recounted_declined FROM ({_suite_query()})"
        ).fetchall()
    }
    macro = {
        (row[0], row[1], row[2], row[3]): (row[4], row[5], row[6])
        for row in con.execute(MACRO_RECOUNT).fetchall()
    }
    return suite, macro


def _assert_same_recount(con: duckdb.DuckDBPyConnection) -> dict[Key, tuple[int, int, int]]:
    suite, macro = _recounts(con)
    # Every (day, series) the macro has a row for is in the suite's batch with its counts
    # (zeros included); the suite's other rows are series the table has and nothing
    # recounts, so zeros.
    assert set(macro) <= set(suite)
    differing = {k: (suite[k], macro.get(k, (0, 0, 0))) for k in suite}
    differing = {k: v for k, v in differing.items() if v[0] != v[1]}
    assert not differing, sorted(differing.items())[:5]
    return macro


def test_the_recount_is_the_macros_on_the_seed_audit(audit: duckdb.DuckDBPyConnection) -> None:
    macro = _assert_same_recount(audit)
    assert len({k[0] for k in macro}) >= 12
    assert sum(sum(v) for v in macro.values()) > 0


T0 = datetime(2021, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

# request_id -> (category, deadline, [(transition_at, disposition), ...] in seq order)
HISTORIES: dict[str, tuple[str, datetime, list[tuple[datetime, str]]]] = {
    # Open past a deadline that falls exactly on a sample midnight: OPEN that midnight
    # (as_of <= deadline), OVERDUE the next.
    "open-deadline-at-midnight": ("DRUGS", T0 + 2 * DAY, [(T0 + 3 * HOUR, "OPEN")]),
    # Resolved exactly at a midnight: that midnight already sees it resolved.
    "resolved-at-midnight": (
        "DRUGS",
        T0 + 10 * DAY,
        [(T0 + 5 * HOUR, "OPEN"), (T0 + 2 * DAY, "RESOLVED_ON_TIME")],
    ),
    # Opened exactly at a midnight: counted from that midnight on.
    "opened-at-midnight": ("DRUGS", T0 + 4 * DAY, [(T0 + 1 * DAY, "OPEN")]),
    # Resolved, reopened, resolved late.
    "reopened": (
        "SUICIDE_PROMOTION",
        T0 + 1 * DAY + 6 * HOUR,
        [
            (T0 + 1 * HOUR, "OPEN"),
            (T0 + 1 * DAY + 1 * HOUR, "RESOLVED_ON_TIME"),
            (T0 + 2 * DAY + 1 * HOUR, "OPEN"),
            (T0 + 5 * DAY + 1 * HOUR, "RESOLVED_LATE"),
        ],
    ),
    # Several transitions at one instant (a midnight): the highest seq holds.
    "tie-at-midnight": (
        "CHILD_SEXUAL_ABUSE_MATERIAL",
        T0 + 6 * DAY,
        [(T0 + 2 * HOUR, "OPEN"), (T0 + 3 * DAY, "RESOLVED_ON_TIME"), (T0 + 3 * DAY, "OPEN")],
    ),
    "tie-within-a-day": (
        "CHILD_SEXUAL_ABUSE_MATERIAL",
        T0 + 6 * DAY,
        [(T0 + 2 * HOUR, "OPEN"), (T0 + 2 * HOUR, "DECLINED"), (T0 + 2 * HOUR, "OPEN")],
    ),
    "declined": ("DRUGS", T0 + 1 * DAY, [(T0 + 4 * HOUR, "OPEN"), (T0 + 3 * HOUR, "DECLINED")]),
    "declined-then-withdrawn": (
        "DRUGS",
        T0 + 1 * DAY,
        [
            (T0 + 4 * HOUR, "OPEN"),
            (T0 + 1 * DAY + 4 * HOUR, "DECLINED"),
            (T0 + 4 * DAY, "WITHDRAWN"),
        ],
    ),
    # A later seq earlier in time than the one before it: as of a time between them the
    # later seq holds (the macro takes the highest seq at or before as_of).
    "time-goes-back": (
        "SUICIDE_PROMOTION",
        T0 + 20 * DAY,
        [(T0 + 1 * HOUR, "OPEN"), (T0 + 3 * DAY + 1 * HOUR, "DECLINED"), (T0 + 2 * DAY, "OPEN")],
    ),
    # Everything of this series resolved: the macro still has rows for it (zeros).
    "all-resolved": (
        "TERRORISM",
        T0 + 5 * DAY,
        [(T0 + 2 * HOUR, "OPEN"), (T0 + 5 * HOUR, "RESOLVED_ON_TIME")],
    ),
    # Issued after the first sample days.
    "late-comer": ("TERRORISM", T0 + 5 * DAY + 1 * HOUR, [(T0 + 4 * DAY + 1 * HOUR, "OPEN")]),
    # No transitions at all: in no status.
    "no-history": ("DRUGS", T0 + 1 * DAY, []),
}
# A transition of a request not in `requests`: the macro leaves it out.
ORPHAN = ("orphan", T0 + 1 * HOUR, "OPEN")


def _request_row(request_id: str, category: str, deadline: datetime) -> dict[str, Any]:
    issued = deadline - DAY
    return {
        "request_id": request_id,
        "event_id": f"ev-{request_id}",
        "platform": request_id,  # a series of its own
        "content_id": f"c-{request_id}",
        "authority": "RKN",
        "authority_kind": "REGULATOR",
        "jurisdiction": "RU",
        "category": category,
        "content_type": "POST",
        "legal_basis": "149-FZ",
        "requested_action": "REMOVE",
        "issued_at": issued,
        "deadline_at": deadline,
        "sla_seconds": 86400,
        "sla_rule_id": "DEFAULT",
        "sla_default_used": True,
        "breached": False,
        "first_resolved_at": None,
        "withdrawn_at": None,
    }


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_writer(tmp_path / "edges.duckdb")
    for request_id, (category, deadline, history) in HISTORIES.items():
        row = _request_row(request_id, category, deadline)
        con.execute(
            f"INSERT INTO requests ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
        for seq, (at, disposition) in enumerate(history):
            con.execute(
                "INSERT INTO lifecycle_transitions VALUES (?, ?, ?, ?, ?, ?, NULL)",
                [f"{request_id}#{seq}", request_id, seq, "OPENED", at, disposition],
            )
    orphan, at, disposition = ORPHAN
    con.execute(
        "INSERT INTO lifecycle_transitions VALUES (?, ?, 0, 'OPENED', ?, ?, NULL)",
        [f"{orphan}#0", orphan, at, disposition],
    )
    # Sample days are the table's days (every one of them, with fewer than 24); the stored
    # counts do not matter to the recount.
    for day in range(8):
        con.execute(
            "INSERT INTO backlog_daily VALUES (?, 'DRUGS', 'no-history', 'RKN', 0, 0, 0, 0)",
            [T0 + day * DAY],
        )
    yield con
    con.close()


def test_the_recount_is_the_macros_at_the_edges(edges: duckdb.DuckDBPyConnection) -> None:
    macro = _assert_same_recount(edges)
    assert len({k[0] for k in macro}) == 7  # the midnights from T0 + 1 day on

    def counts(day: int, request_id: str) -> tuple[int, int, int]:
        category = HISTORIES[request_id][0]
        return macro.get((T0 + day * DAY, category, request_id, "RKN"), (0, 0, 0))

    # The comparison is only as good as the cases: check that they are the edges meant.
    assert counts(2, "open-deadline-at-midnight") == (1, 0, 0)
    assert counts(3, "open-deadline-at-midnight") == (0, 1, 0)
    assert counts(1, "opened-at-midnight") == (1, 0, 0)
    assert counts(2, "resolved-at-midnight") == (0, 0, 0)
    assert [counts(d, "reopened") for d in (1, 2, 3, 6)] == [
        (1, 0, 0),
        (0, 0, 0),
        (0, 1, 0),
        (0, 0, 0),
    ]
    assert [counts(d, "tie-at-midnight") for d in (2, 3)] == [(1, 0, 0), (1, 0, 0)]
    assert counts(1, "tie-within-a-day") == (1, 0, 0)
    assert counts(1, "declined") == (0, 0, 1)
    assert [counts(d, "declined-then-withdrawn") for d in (1, 2, 4)] == [
        (1, 0, 0),
        (0, 0, 1),
        (0, 0, 0),
    ]
    assert [counts(d, "time-goes-back") for d in (1, 2, 3, 4)] == [
        (1, 0, 0),
        (1, 0, 0),
        (1, 0, 0),
        (1, 0, 0),
    ]
    assert counts(4, "late-comer") == (0, 0, 0) and counts(5, "late-comer") == (1, 0, 0)
    assert (T0 + DAY, "TERRORISM", "all-resolved", "RKN") in macro
    assert counts(1, "all-resolved") == (0, 0, 0)
    assert not [k for k in macro if k[2] in ("no-history", "orphan")]

"""backlog_daily derived in SQL from the landed requests and transitions
(`connectors.duckdb_backlog`) against the batch pipeline's BacklogByCategory: on the seed
scenario, on a hand-checked case and on random event sets."""

from __future__ import annotations

import dataclasses
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.duckdb_backlog import refresh_backlog_daily
from connectors.duckdb_sink import apply_schema, connect_writer
from pipelines import rows
from pipelines.batch import batch_runner
from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    ActionEvent,
    ActionType,
    AuthorityKind,
    Category,
    RequestEvent,
    RequestEventType,
    RequestLifecycle,
)
from pipelines.policy import SlaPolicy
from pipelines.settings import Settings
from pipelines.transforms import (
    BacklogByCategory,
    Deltas,
    backlog_deltas,
    daily_rows,
    sum_deltas,
)
from tests.conftest import T0, action, request

POLICY = SlaPolicy.load()
Row = tuple[Any, ...]
_ORDER = "ORDER BY as_of, category, platform, authority"


def _land(con: duckdb.DuckDBPyConnection, lifecycles: Iterable[RequestLifecycle]) -> None:
    """Land requests and lifecycle_transitions as the batch pipeline stages them."""
    lifecycles = list(lifecycles)
    staged = {
        "requests": [rows.request_row(lc) for lc in lifecycles],
        "lifecycle_transitions": [r for lc in lifecycles for r in rows.transition_rows(lc)],
    }
    for table, table_rows in staged.items():
        arrow = pa.Table.from_pylist(table_rows, schema=rows.SCHEMAS[table])
        con.register("staged", arrow)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM staged")
        con.unregister("staged")


def _backlog(con: duckdb.DuckDBPyConnection) -> list[Row]:
    return con.execute(f"SELECT * FROM backlog_daily {_ORDER}").fetchall()


def _batch_backlog(lifecycles: Iterable[RequestLifecycle]) -> list[Row]:
    """BacklogByCategory's steps (Deltas, SumPerDay, GroupSeries, Accumulate) run in plain
    Python: the batch semantics, cheap enough for a property test."""
    per_day: dict[tuple[str, str, str, int], Deltas] = {}
    for lc in lifecycles:
        for key, deltas in backlog_deltas(lc):
            per_day[key] = sum_deltas([per_day.get(key, (0, 0, 0)), deltas])
    series: dict[tuple[str, str, str], list[tuple[int, Deltas]]] = defaultdict(list)
    for (category, platform, authority, day), deltas in per_day.items():
        series[(category, platform, authority)].append((day, deltas))
    return sorted(tuple(row.values()) for element in series.items() for row in daily_rows(element))


def _lifecycles(
    requests: list[RequestEvent], actions: list[ActionEvent]
) -> Iterator[RequestLifecycle]:
    for content in sorted({r.content_id for r in requests}):
        yield from content_lifecycle(
            [r for r in requests if r.content_id == content],
            [a for a in actions if a.content_id == content],
            POLICY,
        )


# --- The seed scenario: the Beam table as the batch pipeline landed it ----------------------


@pytest.fixture(scope="session")
def seed_database(demo: tuple[Settings, str]) -> Path:
    """The seed scenario through the batch pipeline (the session's demo run)."""
    return demo[0].database


@pytest.fixture
def seed(seed_database: Path, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writer on a private copy of the seed database, so each test may overwrite it."""
    copy = tmp_path / "audit.duckdb"
    shutil.copyfile(seed_database, copy)
    con = connect_writer(copy)
    try:
        yield con
    finally:
        con.close()


@pytest.mark.slow
def test_seed_backlog_derived_in_sql_is_the_beam_table(seed: duckdb.DuckDBPyConnection) -> None:
    beam_rows = _backlog(seed)
    seed.execute("CREATE TEMP TABLE beam_backlog AS SELECT * FROM backlog_daily")
    assert len(beam_rows) > 10_000

    seed.begin()
    count = refresh_backlog_daily(seed, None)
    seed.commit()

    assert count == len(beam_rows)
    assert _backlog(seed) == beam_rows
    for left, right in [("backlog_daily", "beam_backlog"), ("beam_backlog", "backlog_daily")]:
        extra = seed.execute(f"SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right}").fetchall()
        assert extra == [], f"{left} EXCEPT ALL {right}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "through", [datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 3, 1, 12, tzinfo=UTC)]
)
def test_seed_cutoff_drops_exactly_the_later_rows(
    seed: duckdb.DuckDBPyConnection, through: datetime
) -> None:
    beam_rows = _backlog(seed)
    kept = [r for r in beam_rows if r[0] <= through]
    assert 0 < len(kept) < len(beam_rows)

    assert refresh_backlog_daily(seed, through) == len(kept)
    assert _backlog(seed) == kept


# --- A hand-checked case --------------------------------------------------------------------


_CSAM = Category.CHILD_SEXUAL_ABUSE_MATERIAL
_RKN, _COURT = "Roskomnadzor", "Moscow City Court"


def _at(day: int, hour: int = 0, ms: int = 0) -> datetime:
    return datetime(2021, 2, day, hour, tzinfo=UTC) + timedelta(milliseconds=ms)


def _by_court(r: RequestEvent) -> RequestEvent:
    return dataclasses.replace(r, authority=_COURT, authority_kind=AuthorityKind.COURT)


def _hand_events() -> tuple[list[RequestEvent], list[ActionEvent]]:
    """Deadlines are 24 h (RU). T0 is midnight on 1 February 2021."""
    withdrawal = dataclasses.replace(
        request(1, content="c1", hours=10),
        event_id="rq-1w",
        event_type=RequestEventType.WITHDRAWN,
        withdrawn_at=_at(6),
    )
    requests = [
        # Series SUICIDE_PROMOTION / Roskomnadzor.
        request(1, content="c1", hours=10),  # removed, reinstated, declined, withdrawn
        withdrawal,
        request(2, content="c2", hours=23),  # breached, resolved late on the 7th
        # Series DRUGS / Roskomnadzor: zero rows between changes.
        request(3, content="c3", hours=6, category=Category.DRUGS),
        request(4, content="c4", hours=4 * 24 + 12, category=Category.DRUGS),
        # Series HATE_SPEECH: open for 4 h inside one day, and resolved at issue: no rows.
        request(5, content="c5", hours=1, category=Category.HATE_SPEECH),
        request(8, content="c8", hours=30, category=Category.HATE_SPEECH),
        # Series CHILD_SEXUAL_ABUSE_MATERIAL / the court: breached while declined.
        _by_court(request(6, content="c6", hours=12, category=_CSAM)),
        _by_court(request(7, content="c7", hours=42, category=_CSAM)),
        # Series EXTREMISM: issued at midnight, reopened before its deadline.
        request(9, content="c9", hours=48, category=Category.EXTREMISM),
    ]
    actions = [
        action(1, content="c1", hours=20),
        action(2, content="c1", hours=54, kind=ActionType.REINSTATED),
        action(3, content="c1", hours=84, kind=ActionType.DECLINED, request_id="R1"),
        action(4, content="c2", hours=6 * 24 + 12),
        action(5, content="c3", hours=27),
        action(6, content="c5", hours=5),
        action(7, content="c8", hours=29),
        action(8, content="c6", hours=36),  # exactly at the deadline: on time
        action(9, content="c7", hours=44, kind=ActionType.DECLINED),
        action(10, content="c9", hours=50),
        action(11, content="c9", hours=56, kind=ActionType.REINSTATED),
        action(12, content="c9", hours=4 * 24 + 6),
    ]
    return requests, actions


def _series(category: str, authority: str, first_day: int, counts: list[str]) -> list[Row]:
    """Rows of one series from "open overdue declined" strings, one a day from first_day."""
    out: list[Row] = []
    for i, text in enumerate(counts):
        o, ov, d = map(int, text.split())
        out.append((_at(first_day + i), category, "twitter", authority, o, ov, d, o + ov + d))
    return out


HAND_EXPECTED = sorted(
    # R1: OPEN 10:00-20:00 on the 1st (no midnight inside), RESOLVED; REOPENED on the 3rd
    # past its deadline: OVERDUE; DECLINED on the 4th; WITHDRAWN at midnight on the 6th.
    # R2: OPEN, OVERDUE from 23:00:00.001 on the 2nd, RESOLVED_LATE at noon on the 7th.
    # The series ends on the 8th, all zeros: that day is its last change.
    _series(
        "SUICIDE_PROMOTION",
        _RKN,
        2,
        ["1 0 0", "0 1 0", "0 2 0", "0 1 1", "0 1 0", "0 1 0", "0 0 0"],
    )
    # R3: OPEN from 06:00 on the 1st to 03:00 on the 2nd; R4 OPEN from noon on the 5th,
    # OVERDUE from noon on the 6th. The days in between are kept, with zero counts.
    + _series("DRUGS", _RKN, 2, ["1 0 0", "0 0 0", "0 0 0", "0 0 0", "1 0 0", "0 1 0"])
    # R6: OPEN from noon on the 1st, removed at its deadline. R7: DECLINED at 20:00 on the
    # 2nd, BREACHED while declined on the 3rd: the declined count does not move on the 4th,
    # but the breach splits the DECLINED segment, so the 4th is a change day and has a row.
    + _series("CHILD_SEXUAL_ABUSE_MATERIAL", _COURT, 2, ["1 0 0", "0 0 1", "0 0 1"])
    # R9: issued at midnight on the 3rd (counted that midnight), removed 02:00, REOPENED at
    # 08:00 before its deadline (OPEN at midnight on the 4th: the deadline is not yet past),
    # OVERDUE from 00:00:00.001 on the 4th, RESOLVED_LATE at 06:00 on the 5th.
    + _series("EXTREMISM", _RKN, 3, ["1 0 0", "1 0 0", "0 1 0", "0 0 0"])
)


@pytest.fixture
def hand_lifecycles() -> list[RequestLifecycle]:
    return list(_lifecycles(*_hand_events()))


@pytest.fixture
def hand(
    hand_lifecycles: list[RequestLifecycle], tmp_path: Path
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_writer(tmp_path / "audit.duckdb")
    try:
        _land(con, hand_lifecycles)
        yield con
    finally:
        con.close()


def test_hand_case_exercises_the_transitions(hand: duckdb.DuckDBPyConnection) -> None:
    found = hand.execute("SELECT DISTINCT transition FROM lifecycle_transitions").fetchall()
    transitions = {t for (t,) in found}
    assert {"REOPENED", "DECLINED", "WITHDRAWN", "BREACHED", "RESOLVED_LATE"} <= transitions


def test_hand_case(hand: duckdb.DuckDBPyConnection) -> None:
    assert refresh_backlog_daily(hand, None) == len(HAND_EXPECTED) == 20
    assert _backlog(hand) == HAND_EXPECTED


def test_hand_case_is_what_beam_computes(hand_lifecycles: list[RequestLifecycle]) -> None:
    """The hand-checked rows are BacklogByCategory's, on Beam's runner."""
    assert _batch_backlog(hand_lifecycles) == HAND_EXPECTED
    expected = [
        dict(zip(rows.SCHEMAS["backlog_daily"].names, row, strict=True)) for row in HAND_EXPECTED
    ]
    with beam.Pipeline(runner=batch_runner()) as pipeline:
        backlog = pipeline | beam.Create(hand_lifecycles) | BacklogByCategory()
        assert_that(backlog, equal_to(expected))


@pytest.mark.parametrize(
    ("through", "kept"),
    [
        (_at(1, 23), 0),  # before the first midnight of any series
        (_at(4), 11),  # a midnight is inclusive
        (_at(4, ms=1), 11),
        (_at(6, 23) + timedelta(minutes=59), 17),
        (_at(8), 20),
        (datetime(2030, 1, 1, tzinfo=UTC), 20),
    ],
)
def test_hand_case_cutoff_drops_exactly_the_later_rows(
    hand: duckdb.DuckDBPyConnection, through: datetime, kept: int
) -> None:
    assert refresh_backlog_daily(hand, through) == kept
    assert _backlog(hand) == [r for r in HAND_EXPECTED if r[0] <= through]


def test_refresh_replaces_the_table_inside_the_callers_transaction(
    hand: duckdb.DuckDBPyConnection,
) -> None:
    refresh_backlog_daily(hand, None)
    hand.begin()
    refresh_backlog_daily(hand, _at(4))
    assert len(_backlog(hand)) == 11
    hand.rollback()
    assert _backlog(hand) == HAND_EXPECTED


def test_naive_cutoff_is_refused(hand: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh_backlog_daily(hand, datetime(2021, 2, 4))


# --- Random event sets ----------------------------------------------------------------------

# 6 h steps over 5 days from a midnight hit midnights, deadlines and ties often; the tick
# either side puts segment ends just before and after midnights and deadlines.
MS = timedelta(milliseconds=1)
times = st.builds(
    lambda steps, tick: T0 + timedelta(hours=6 * steps) + tick,
    st.integers(0, 20),
    st.sampled_from([timedelta(0), timedelta(0), MS, -MS]),
)


@st.composite
def event_sets(draw: st.DrawFn) -> tuple[list[RequestEvent], list[ActionEvent]]:
    requests: list[RequestEvent] = []
    for n in range(draw(st.integers(1, 6))):
        issued = dataclasses.replace(
            request(n, content=f"c{n % 3}", jurisdiction=draw(st.sampled_from(["RU", "DE"]))),
            issued_at=draw(times),
            category=draw(st.sampled_from([Category.SUICIDE_PROMOTION, Category.DRUGS])),
            authority=draw(st.sampled_from(["Roskomnadzor", "Prosecutor General"])),
        )
        requests.append(issued)
        if draw(st.integers(0, 3)) == 0:
            requests.append(
                dataclasses.replace(
                    issued,
                    event_id=f"{issued.event_id}w",
                    event_type=RequestEventType.WITHDRAWN,
                    withdrawn_at=draw(times),
                )
            )
    actions = [
        dataclasses.replace(
            action(
                n,
                content=draw(st.sampled_from(["c0", "c1", "c2"])),
                kind=draw(st.sampled_from(list(ActionType))),
                jurisdiction=draw(st.sampled_from([None, "RU", "DE"])),
                request_id=draw(st.sampled_from([None, "R0", "R1", "R2"])),
            ),
            acted_at=draw(times),
        )
        for n in range(draw(st.integers(0, 10)))
    ]
    return requests, actions


@pytest.fixture(scope="module")
def scratch() -> Iterator[duckdb.DuckDBPyConnection]:
    """One in-memory database for every example. Its session is not in UTC: the days are
    UTC midnights whatever the session's time zone."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'Asia/Kathmandu'")
        apply_schema(con)
        yield con
    finally:
        con.close()


def _released(lifecycles: list[RequestLifecycle], watermark: datetime) -> list[RequestLifecycle]:
    """What the streaming path has landed at `watermark`: each request's transitions at or
    before it (so no BREACHED yet for a deadline past the watermark)."""
    out = []
    for lc in lifecycles:
        final = tuple(t for t in lc.transitions if t.at <= watermark)
        if final:
            out.append(dataclasses.replace(lc, transitions=final))
    return out


@settings(max_examples=200, deadline=None)
@given(events=event_sets(), watermark=st.none() | times, through=st.none() | times)
def test_random_cases_match_the_batch_semantics(
    scratch: duckdb.DuckDBPyConnection,
    events: tuple[list[RequestEvent], list[ActionEvent]],
    watermark: datetime | None,
    through: datetime | None,
) -> None:
    """With a watermark, histories are cut as the streaming path lands them: an OPEN span
    may then run past its deadline with no BREACHED after it, and only the split at
    deadline + 1 ms (status_segments) makes the rest of it OVERDUE."""
    lifecycles = list(_lifecycles(*events))
    if watermark is not None:
        lifecycles = _released(lifecycles, watermark)
    expected = [r for r in _batch_backlog(lifecycles) if through is None or r[0] <= through]
    scratch.begin()
    try:
        _land(scratch, lifecycles)
        assert refresh_backlog_daily(scratch, through) == len(expected)
        assert _backlog(scratch) == expected
    finally:
        scratch.rollback()

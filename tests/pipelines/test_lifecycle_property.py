"""The lifecycle function against a naive reference in plain SQL (DuckDB), on random event
sets with shuffled, repeated and late events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.lifecycle import content_lifecycle, status_segments
from pipelines.model import (
    ActionEvent,
    ActionType,
    AuthorityKind,
    Category,
    RequestEvent,
    RequestEventType,
    RequestLifecycle,
    Status,
)
from pipelines.policy import SlaPolicy

REFERENCE_SQL = (Path(__file__).parent / "lifecycle_reference.sql").read_text()
EPOCH = datetime(2021, 3, 1, tzinfo=UTC)
POLICY = SlaPolicy.load(default_sla=timedelta(hours=30))
PLATFORM = "twitter"

# Coarse steps of 6 h over 5 days make ties and exact-deadline hits common; a 1 ms offset
# (the deadline's own tick) is mixed in so "at", "just after" the deadline both occur.
times = st.builds(
    lambda steps, tick: EPOCH + timedelta(hours=6 * steps, milliseconds=tick),
    st.integers(0, 20),
    st.sampled_from([0, 0, 0, 1]),
)
contents = st.sampled_from(["c1", "c2"])
request_ids = st.sampled_from(["R1", "R2", "R3", "R4"])
jurisdictions = st.sampled_from(["RU", "DE", "XX"])


@st.composite
def request_events(draw: st.DrawFn, index: int) -> RequestEvent:
    withdrawn = draw(st.booleans()) and draw(st.booleans())
    issued_at = draw(times)
    category = draw(st.sampled_from([Category.SUICIDE_PROMOTION, Category.TERRORISM]))
    request_id = draw(request_ids)
    return RequestEvent(
        event_id=f"rq{index}",
        request_id=request_id,
        event_type=RequestEventType.WITHDRAWN if withdrawn else RequestEventType.ISSUED,
        authority="Authority",
        authority_kind=AuthorityKind.REGULATOR,
        jurisdiction=draw(jurisdictions),
        platform=PLATFORM,
        # A request targets one piece of content: its id decides which.
        content_id="c1" if request_id in ("R1", "R2") else "c2",
        content_type="POST",
        category=category,
        legal_basis="test",
        requested_action="REMOVE",
        issued_at=issued_at,
        withdrawn_at=draw(times) if withdrawn else None,
    )


# Offsets from a request's issue that sit on the boundaries the semantics care about:
# the issue itself, the deadlines in force here (24 h, 30 h default, 7 d) and 1 ms around.
MS = timedelta(milliseconds=1)
BOUNDARY_OFFSETS = [
    d + e
    for d in (timedelta(0), timedelta(hours=24), timedelta(hours=30), timedelta(days=7))
    for e in (-MS, timedelta(0), MS)
]


@st.composite
def action_events(draw: st.DrawFn, index: int, anchors: list[datetime]) -> ActionEvent:
    if anchors and draw(st.booleans()):
        acted_at = draw(st.sampled_from(anchors)) + draw(st.sampled_from(BOUNDARY_OFFSETS))
    else:
        acted_at = draw(times)
    return ActionEvent(
        event_id=f"ac{index}",
        action_id=f"act{index}",
        request_id=draw(st.none() | request_ids),
        platform=PLATFORM,
        content_id=draw(contents),
        action=draw(st.sampled_from(list(ActionType))),
        jurisdiction=draw(st.none() | st.sampled_from(["RU", "DE"])),
        acted_at=acted_at,
    )


@st.composite
def event_sets(draw: st.DrawFn) -> tuple[list[RequestEvent], list[ActionEvent]]:
    n_req = draw(st.integers(1, 6))
    n_act = draw(st.integers(0, 8))
    reqs = [draw(request_events(i)) for i in range(n_req)]
    anchors = sorted({r.issued_at for r in reqs})
    acts = [draw(action_events(i, anchors)) for i in range(n_act)]
    return reqs, acts


def _lifecycles(reqs: list[RequestEvent], acts: list[ActionEvent]) -> list[RequestLifecycle]:
    out: list[RequestLifecycle] = []
    for content in ("c1", "c2"):
        out += content_lifecycle(
            [r for r in reqs if r.content_id == content],
            [a for a in acts if a.content_id == content],
            POLICY,
        )
    return out


def _delivered(events: list, rng: random.Random) -> list:  # type: ignore[type-arg]
    """The same events as a broker might deliver them: shuffled, some more than once."""
    out = events + [e for e in events if rng.random() < 0.3]
    rng.shuffle(out)
    return out


def _reference(
    reqs: list[RequestEvent],
    acts: list[ActionEvent],
    lifecycles: list[RequestLifecycle],
    points: list[tuple[str, datetime]],
) -> dict[tuple[str, datetime], str | None]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ts = pa.timestamp("ms", tz="UTC")
    request_events = pa.table(
        {
            "event_id": [r.event_id for r in reqs],
            "request_id": [r.request_id for r in reqs],
            "event_type": [r.event_type.value for r in reqs],
            "jurisdiction": [r.jurisdiction for r in reqs],
            "platform": [r.platform for r in reqs],
            "content_id": [r.content_id for r in reqs],
            "issued_at": pa.array([r.issued_at for r in reqs], ts),
            "withdrawn_at": pa.array([r.withdrawn_at for r in reqs], ts),
        }
    )
    action_events = pa.table(
        {
            "event_id": pa.array([a.event_id for a in acts], pa.string()),
            "request_id": pa.array([a.request_id for a in acts], pa.string()),
            "platform": pa.array([a.platform for a in acts], pa.string()),
            "content_id": pa.array([a.content_id for a in acts], pa.string()),
            "action": pa.array([a.action.value for a in acts], pa.string()),
            "jurisdiction": pa.array([a.jurisdiction for a in acts], pa.string()),
            "acted_at": pa.array([a.acted_at for a in acts], ts),
        }
    )
    deadlines = pa.table(
        {
            "request_id": [lc.request.request_id for lc in lifecycles],
            "due_at": pa.array([lc.deadline.due_at for lc in lifecycles], ts),
        }
    )
    points_table = pa.table(
        {"request_id": [p[0] for p in points], "t": pa.array([p[1] for p in points], ts)}
    )
    for name, table in [
        ("request_events", request_events),
        ("action_events", action_events),
        ("deadlines", deadlines),
        ("points", points_table),
    ]:
        con.register(name, table)
    rows = con.execute(REFERENCE_SQL).fetchall()
    result: dict[tuple[str, datetime], str | None] = {p: None for p in points}
    for request_id, t, status in rows:
        result[(request_id, t.astimezone(UTC))] = status
    return result


@settings(max_examples=300, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False))
def test_lifecycle_matches_sql_reference(
    events: tuple[list[RequestEvent], list[ActionEvent]], rng: random.Random
) -> None:
    reqs, acts = events
    lifecycles = _lifecycles(reqs, acts)
    by_id = {lc.request.request_id: lc for lc in lifecycles}

    # Evaluate at every event time, one tick either side, and at each deadline.
    instants = {e.event_time for e in [*reqs, *acts]}
    instants |= {lc.deadline.due_at for lc in lifecycles}
    instants |= {
        t + d
        for t in list(instants)
        for d in (timedelta(milliseconds=-1), timedelta(milliseconds=1))
    }
    points = [(rid, t) for rid in by_id for t in sorted(instants)]
    expected = _reference(_delivered(reqs, rng), _delivered(acts, rng), lifecycles, points)

    for (rid, t), want in expected.items():
        got = by_id[rid].status_as_of(t)
        assert (got.value if got else None) == want, (rid, t)
        segment_status = next(
            (
                s.status
                for s in status_segments(by_id[rid])
                if s.start <= t and (s.end is None or t < s.end)
            ),
            None,
        )
        assert segment_status == got, (rid, t)

    for lc in lifecycles:
        at_deadline = expected[(lc.request.request_id, lc.deadline.due_at)]
        assert lc.breached == (at_deadline in ("OPEN", "DECLINED"))


@settings(max_examples=200, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False))
def test_result_depends_only_on_the_set_of_events(
    events: tuple[list[RequestEvent], list[ActionEvent]], rng: random.Random
) -> None:
    reqs, acts = events
    assert _lifecycles(_delivered(reqs, rng), _delivered(acts, rng)) == _lifecycles(reqs, acts)


@settings(max_examples=200, deadline=None)
@given(event_sets(), times)
def test_late_events_do_not_change_the_past(
    events: tuple[list[RequestEvent], list[ActionEvent]], as_of: datetime
) -> None:
    """Status as of T from the events known at T equals status as of T from all events."""
    reqs, acts = events
    full = {lc.request.request_id: lc for lc in _lifecycles(reqs, acts)}
    known_reqs = [r for r in reqs if r.event_time <= as_of]
    known_acts = [a for a in acts if a.event_time <= as_of]
    for lc in _lifecycles(known_reqs, known_acts):
        want = full[lc.request.request_id].status_as_of(as_of)
        assert lc.status_as_of(as_of) == want


def test_reference_sees_overdue_and_late_resolution() -> None:
    """The reference itself is not vacuous: it distinguishes the statuses that matter."""
    req = RequestEvent(
        "rq0",
        "R1",
        RequestEventType.ISSUED,
        "Authority",
        AuthorityKind.REGULATOR,
        "RU",
        PLATFORM,
        "c1",
        "POST",
        Category.SUICIDE_PROMOTION,
        "test",
        "REMOVE",
        EPOCH,
    )
    act = ActionEvent(
        "ac0", "a", None, PLATFORM, "c1", ActionType.REMOVED, None, EPOCH + timedelta(days=2)
    )
    lcs = _lifecycles([req], [act])
    points = [
        ("R1", EPOCH),
        ("R1", EPOCH + timedelta(days=1, hours=1)),
        ("R1", EPOCH + timedelta(days=3)),
    ]
    got = _reference([req], [act], lcs, points)
    assert list(got.values()) == ["OPEN", "OVERDUE", "RESOLVED_LATE"]
    assert [lcs[0].status_as_of(t) for _, t in points] == [
        Status.OPEN,
        Status.OVERDUE,
        Status.RESOLVED_LATE,
    ]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])

"""compact_pickle: what Beam pickles between stages comes back equal, field for field."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from connectors.errors import ReasonCode
from connectors.origin import SourceRef
from pipelines.intake import Accepted, Quarantined
from pipelines.lifecycle import content_lifecycle
from pipelines.model import RequestEventType
from pipelines.policy import SlaPolicy
from tests.conftest import action, request


def _fields(obj: Any) -> list[tuple[str, type, Any, Any]]:
    """Each field's name, exact type, value and (for datetimes) tzinfo and fold."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        extra = (value.tzinfo, value.fold) if isinstance(value, datetime) else None
        out.append((f.name, type(value), value, extra))
    return out


def assert_round_trip(obj: Any) -> None:
    # Beam pickles with the highest protocol; before 4, datetime's own pickle drops `fold`.
    for protocol in range(4, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(obj, protocol))
        assert type(copy) is type(obj)
        assert copy == obj and hash(copy) == hash(obj)
        assert _fields(copy) == _fields(obj)


def test_events_and_intake_results() -> None:
    issued = request(1)
    withdrawn = dataclasses.replace(
        issued,
        event_id="rq-1-w",
        event_type=RequestEventType.WITHDRAWN,
        withdrawn_at=issued.issued_at + timedelta(hours=3, microseconds=7),
    )
    for event in (issued, withdrawn, action(1), action(2, jurisdiction="RU", request_id="R1")):
        assert_round_trip(event)
        assert_round_trip(
            Accepted(event, SourceRef("removal.requests/0", 17), 2, b"\xc3\x01", None)
        )
    assert_round_trip(
        Quarantined(
            SourceRef("a.avro", 3), "removal.actions", ReasonCode.TRUNCATED, "cut", b"k", b"\x00"
        )
    )


def test_lifecycles() -> None:
    policy = SlaPolicy.load()
    lifecycles = content_lifecycle(
        [request(1), request(2, jurisdiction="DE")],
        [action(1, hours=30), action(2, hours=40, kind="REINSTATED")],
        policy,
    )
    assert lifecycles and all(len(lc.transitions) > 1 for lc in lifecycles)
    for lc in lifecycles:
        assert_round_trip(lc)
        assert_round_trip(lc.deadline)
        for transition in lc.transitions:
            assert_round_trip(transition)


@pytest.mark.parametrize(
    "issued_at",
    [
        datetime(2021, 2, 1, 10, 0, tzinfo=timezone(timedelta(hours=3))),  # not UTC
        datetime(2021, 2, 1, 10, 0, fold=1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_datetimes_come_back_exactly(issued_at: datetime) -> None:
    assert_round_trip(dataclasses.replace(request(1), issued_at=issued_at))


def test_a_plain_str_in_an_enum_field_comes_back_as_the_equal_member() -> None:
    event = dataclasses.replace(request(1), event_type="WITHDRAWN")  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(event))
    assert copy == event and copy.event_type is RequestEventType.WITHDRAWN


def test_pickles_are_smaller_and_name_no_enum_or_tzinfo() -> None:
    event = request(1)
    data = pickle.dumps(event, pickle.HIGHEST_PROTOCOL)
    assert b"RequestEventType" not in data and b"timezone" not in data

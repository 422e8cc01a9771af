"""The lifecycle semantics on small, named cases (the property test covers the rest)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    ActionType,
    RequestEvent,
    RequestEventType,
    RequestLifecycle,
    Status,
    Transition,
)
from pipelines.policy import SlaPolicy
from tests.conftest import T0, action, request

POLICY = SlaPolicy.load()
H = timedelta(hours=1)


def _one(requests: list[RequestEvent], actions: list) -> RequestLifecycle:  # type: ignore[type-arg]
    (lc,) = content_lifecycle(requests, actions, POLICY)
    return lc


def _transitions(lc: RequestLifecycle) -> list[tuple[Transition, float]]:
    return [(t.transition, (t.at - T0) / H) for t in lc.transitions]


def test_removal_inside_the_deadline_resolves_on_time() -> None:
    lc = _one([request(1)], [action(1, hours=5)])
    assert _transitions(lc) == [(Transition.OPENED, 0), (Transition.RESOLVED, 5)]
    assert lc.status_as_of(T0 + 4 * H) is Status.OPEN
    assert lc.status_as_of(T0 + 5 * H) is Status.RESOLVED_ON_TIME


def test_action_exactly_at_the_deadline_is_on_time() -> None:
    lc = _one([request(1)], [action(1, hours=24)])
    assert not lc.breached and lc.status_as_of(T0 + 30 * H) is Status.RESOLVED_ON_TIME


def test_breach_then_late_resolution() -> None:
    lc = _one([request(1)], [action(1, hours=30)])
    assert [t for t, _ in _transitions(lc)] == [
        Transition.OPENED,
        Transition.BREACHED,
        Transition.RESOLVED_LATE,
    ]
    assert lc.status_as_of(T0 + 24 * H) is Status.OPEN
    assert lc.status_as_of(T0 + 24 * H + timedelta(milliseconds=1)) is Status.OVERDUE
    assert lc.status_as_of(T0 + 31 * H) is Status.RESOLVED_LATE


def test_restriction_covers_only_its_jurisdiction() -> None:
    ru, de = request(1, jurisdiction="RU"), request(2, jurisdiction="DE")
    lcs = content_lifecycle(
        [ru, de], [action(1, hours=2, kind=ActionType.RESTRICTED, jurisdiction="RU")], POLICY
    )
    assert [lc.status_as_of(T0 + 3 * H) for lc in lcs] == [Status.RESOLVED_ON_TIME, Status.OPEN]


def test_content_already_removed_resolves_a_new_request_at_once() -> None:
    lc = _one([request(1, hours=10)], [action(1, hours=2)])
    assert _transitions(lc) == [(Transition.OPENED, 10), (Transition.RESOLVED, 10)]


def test_decline_is_unresolved_and_a_later_removal_resolves_it() -> None:
    lc = _one(
        [request(1)],
        [action(1, hours=1, kind=ActionType.DECLINED, request_id="R1"), action(2, hours=50)],
    )
    assert lc.status_as_of(T0 + 2 * H) is Status.DECLINED
    assert Transition.BREACHED in [t.transition for t in lc.transitions]
    assert lc.status_as_of(T0 + 51 * H) is Status.RESOLVED_LATE


def test_reinstatement_reopens() -> None:
    lc = _one([request(1)], [action(1, hours=1), action(2, hours=40, kind=ActionType.REINSTATED)])
    assert [t for t, _ in _transitions(lc)][-1] is Transition.REOPENED
    assert lc.status_as_of(T0 + 41 * H) is Status.OVERDUE


def test_withdrawal_is_final() -> None:
    withdrawal = dataclasses.replace(
        request(1), event_id="rq-w", event_type=RequestEventType.WITHDRAWN, withdrawn_at=T0 + 3 * H
    )
    lc = _one([request(1), withdrawal], [action(1, hours=50)])
    assert _transitions(lc) == [(Transition.OPENED, 0), (Transition.WITHDRAWN, 3)]
    assert lc.status_as_of(T0 + 60 * H) is Status.WITHDRAWN


def test_repeated_demand_under_one_request_id_keeps_the_first() -> None:
    resent = dataclasses.replace(request(1, hours=5), event_id="rq-again")
    lc = _one([resent, request(1)], [])
    assert lc.request.event_id == "rq-1" and lc.request.issued_at == T0


def test_a_refusal_does_not_undo_a_takedown() -> None:
    lc = _one(
        [request(1)],
        [action(1, hours=2), action(2, hours=3, kind=ActionType.DECLINED, request_id="R1")],
    )
    assert lc.status_as_of(T0 + 4 * H) is Status.RESOLVED_ON_TIME
    assert [t for t, _ in _transitions(lc)] == [Transition.OPENED, Transition.RESOLVED]


def test_reinstatement_clears_an_earlier_refusal() -> None:
    lc = _one(
        [request(1)],
        [
            action(1, hours=1, kind=ActionType.DECLINED, request_id="R1"),
            action(2, hours=2),
            action(3, hours=3, kind=ActionType.REINSTATED),
        ],
    )
    assert lc.status_as_of(T0 + 4 * H) is Status.OPEN

"""The lifecycle of removal requests: one pure function of (requests, actions, policy).

Both the batch path (grouping by content) and the streaming path (keyed state and timers)
call `content_lifecycle`, so they cannot disagree. The rules, for one request R on one
piece of content (DESIGN.md, Semantics), with events ordered by (event time, event_id):

* Each action is, for R, covering (C), uncovering (U), declining (D) or irrelevant:
  - REMOVED, ACCOUNT_SUSPENDED, CONTENT_NOT_FOUND: C (the content is gone everywhere);
  - RESTRICTED: C if it names R's request_id or restricts R's jurisdiction;
  - REINSTATED: U if it has no jurisdiction or R's jurisdiction;
  - DECLINED: D if it names R, or names no request and has no jurisdiction or R's, and
    is not older than R (a refusal cannot answer a demand not yet made).
* As of T (only events at or before T count), R is WITHDRAWN if a withdrawal of R is at or
  before T. Otherwise, if the last C or U event is a C, the content is down for R and R is
  resolved: on time if the covering run (the C events since the last U) began, or R was
  issued, at or before the deadline. Otherwise R is DECLINED if a D came after the last U
  (a reinstatement starts afresh), else OPEN (OVERDUE once T is past the deadline). A C
  before R was issued means the content was already down: R resolves the moment it is
  issued. A refusal does not undo a takedown: content that is down stays resolved.
* R is BREACHED at deadline + 1 ms when, as of the deadline, it was OPEN or DECLINED.

Example: a request issued 2021-02-01T10:00Z with a 24 h deadline and a RESTRICTED(RU)
action at 2021-02-03T09:00Z yields OPENED (10:00 on the 1st), BREACHED (10:00:00.001 on
the 2nd), RESOLVED_LATE (09:00 on the 3rd).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from operator import itemgetter
from typing import TypeVar

from pipelines.model import (
    TAKEDOWN_ACTIONS,
    TICK,
    ActionEvent,
    ActionType,
    Disposition,
    RequestEvent,
    RequestEventType,
    RequestLifecycle,
    Status,
    Transition,
    TransitionRecord,
)
from pipelines.policy import SlaPolicy

E = TypeVar("E", RequestEvent, ActionEvent)


class _Effect(IntEnum):
    COVER = 1
    UNCOVER = 2
    DECLINE = 3


class _Step(IntEnum):
    """Order of things that happen at the same millisecond."""

    BREACH = 0
    WITHDRAW = 1
    ACTION = 2


_RESOLVED = (Disposition.RESOLVED_ON_TIME, Disposition.RESOLVED_LATE)
_STEP_ORDER = itemgetter(0, 1, 2)  # (time, _Step, event_id)


class _Coverage:
    """Where a request stands with the platform: is the content down for it, and has the
    platform refused it since the content was last put back?"""

    def __init__(self) -> None:
        self.covered_by: str | None = None  # the action that began the current takedown
        self.declined_by: str | None = None  # the first refusal since the last reinstatement

    @property
    def covered(self) -> bool:
        return self.covered_by is not None

    @property
    def declined(self) -> bool:
        return self.declined_by is not None

    def apply(self, effect: _Effect, event_id: str) -> None:
        if effect is _Effect.COVER:
            self.covered_by = self.covered_by or event_id
        elif effect is _Effect.UNCOVER:
            self.covered_by = self.declined_by = None
        else:
            self.declined_by = self.declined_by or event_id


def effect_on(action: ActionEvent, request: RequestEvent) -> _Effect | None:
    """How `action` bears on `request`, or None if it does not."""
    kind = action.action
    if kind in TAKEDOWN_ACTIONS:
        return _Effect.COVER
    if kind is ActionType.RESTRICTED:
        if action.request_id == request.request_id or action.jurisdiction == request.jurisdiction:
            return _Effect.COVER
        return None
    if kind is ActionType.REINSTATED:
        if action.jurisdiction is None or action.jurisdiction == request.jurisdiction:
            return _Effect.UNCOVER
        return None
    # DECLINED
    if action.acted_at < request.issued_at:
        return None
    if action.request_id == request.request_id:
        return _Effect.DECLINE
    if action.request_id is None and action.jurisdiction in (None, request.jurisdiction):
        return _Effect.DECLINE
    return None


def dedupe_by_event_id(events: Iterable[E]) -> list[E]:
    """One event per event_id (the first by event time, then content), in event-time order."""
    if isinstance(events, list | tuple) and len(events) < 2:
        return list(events)  # most content has one request and at most one action
    chosen: dict[str, E] = {}
    for event in events:
        kept = chosen.get(event.event_id)
        if kept is None or (event.event_time, repr(event)) < (kept.event_time, repr(kept)):
            chosen[event.event_id] = event
    return sorted(chosen.values(), key=lambda e: (e.event_time, e.event_id))


def content_lifecycle(
    requests: Iterable[RequestEvent],
    actions: Iterable[ActionEvent],
    policy: SlaPolicy,
) -> list[RequestLifecycle]:
    """Lifecycles of every request on one piece of content, ordered by request_id.

    `requests` and `actions` are all events known for one (platform, content_id), in any
    order, possibly with repeated deliveries. The result depends only on the set of events.
    """
    request_events = dedupe_by_event_id(requests)
    action_events = dedupe_by_event_id(actions)

    issued: dict[str, RequestEvent] = {}
    withdrawals: dict[str, list[datetime]] = {}
    for event in request_events:
        if event.event_type is RequestEventType.ISSUED:
            # A demand re-sent under the same request_id: the earliest issue counts.
            issued.setdefault(event.request_id, event)
        elif event.withdrawn_at is not None:
            withdrawals.setdefault(event.request_id, []).append(event.withdrawn_at)

    return [
        _request_lifecycle(issued[rid], withdrawals.get(rid, []), action_events, policy)
        for rid in sorted(issued)
    ]


def _request_lifecycle(
    request: RequestEvent,
    withdrawn_at: list[datetime],
    actions: list[ActionEvent],
    policy: SlaPolicy,
) -> RequestLifecycle:
    deadline = policy.deadline_for(request)
    issued_at = request.issued_at
    relevant = [(a, e) for a in actions if (e := effect_on(a, request)) is not None]

    out: list[TransitionRecord] = []
    state = _Coverage()

    def emit(transition: Transition, at: datetime, disp: Disposition, cause: str | None) -> None:
        out.append(TransitionRecord(request.request_id, len(out), transition, at, disp, cause))

    # Events at or before the issue define the state the request is born into.
    for prior, prior_effect in relevant:
        if prior.acted_at <= issued_at:
            state.apply(prior_effect, prior.event_id)
    disposition = Disposition.OPEN
    emit(Transition.OPENED, issued_at, disposition, request.event_id)
    if state.covered:
        disposition = Disposition.RESOLVED_ON_TIME
        emit(Transition.RESOLVED, issued_at, disposition, state.covered_by)
    elif state.declined:
        disposition = Disposition.DECLINED
        emit(Transition.DECLINED, issued_at, disposition, state.declined_by)

    steps: list[tuple[datetime, _Step, str, ActionEvent | None, _Effect | None]] = [
        (deadline.due_at + TICK, _Step.BREACH, "", None, None)
    ]
    if withdrawn_at:
        steps.append((max(min(withdrawn_at), issued_at), _Step.WITHDRAW, "", None, None))
    steps.extend(
        (a.acted_at, _Step.ACTION, a.event_id, a, e) for a, e in relevant if a.acted_at > issued_at
    )
    steps.sort(key=_STEP_ORDER)

    for at, step, _, action, effect in steps:
        if step is _Step.BREACH:
            if disposition in (Disposition.OPEN, Disposition.DECLINED):
                emit(Transition.BREACHED, at, disposition, None)
            continue
        if step is _Step.WITHDRAW:
            emit(Transition.WITHDRAWN, at, Disposition.WITHDRAWN, None)
            break
        assert action is not None and effect is not None
        state.apply(effect, action.event_id)
        if state.covered:
            if disposition not in _RESOLVED:
                on_time = at <= deadline.due_at
                disposition = Disposition.RESOLVED_ON_TIME if on_time else Disposition.RESOLVED_LATE
                transition = Transition.RESOLVED if on_time else Transition.RESOLVED_LATE
                emit(transition, at, disposition, action.event_id)
        elif state.declined:
            if disposition is not Disposition.DECLINED:
                disposition = Disposition.DECLINED
                emit(Transition.DECLINED, at, disposition, action.event_id)
        elif disposition is not Disposition.OPEN:
            disposition = Disposition.OPEN
            emit(Transition.REOPENED, at, disposition, action.event_id)

    return RequestLifecycle(request=request, deadline=deadline, transitions=tuple(out))


@dataclass(frozen=True, slots=True)
class StatusSegment:
    """`status` holds for start <= T < end (end None: until further notice)."""

    status: Status
    start: datetime
    end: datetime | None


def status_segments(lifecycle: RequestLifecycle) -> Iterator[StatusSegment]:
    """The request's status over event time, as consecutive segments.

    Example: OPENED at t0, RESOLVED_LATE at t2 with deadline d (t0 < d < t2) yields
    OPEN [t0, d+1ms), OVERDUE [d+1ms, t2), RESOLVED_LATE [t2, None).
    """
    overdue_from = lifecycle.deadline.due_at + TICK
    transitions = lifecycle.transitions
    for i, t in enumerate(transitions):
        end = transitions[i + 1].at if i + 1 < len(transitions) else None
        if end is not None and end == t.at:
            continue
        if t.disposition is Disposition.OPEN:
            if t.at < overdue_from and (end is None or end > overdue_from):
                yield StatusSegment(Status.OPEN, t.at, overdue_from)
                yield StatusSegment(Status.OVERDUE, overdue_from, end)
            elif t.at >= overdue_from:
                yield StatusSegment(Status.OVERDUE, t.at, end)
            else:
                yield StatusSegment(Status.OPEN, t.at, end)
        else:
            yield StatusSegment(Status(t.disposition.value), t.at, end)

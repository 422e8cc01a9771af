"""Calibration: move planned answers until the published figures hold, and check them.

`Book` keeps each plan's lifecycles (from the lifecycle function) up to date as plans are
edited. `calibrate` moves the answers of chosen plain demands (one demand on its content,
no episode) across the calibration instant until every "exactly" figure holds;
`clean_up` plays a scenario's clean-up phases. `evaluate_figures` recomputes every
figure from events, which is how the generator checks what it is about to write.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    UNRESOLVED,
    ActionEvent,
    Category,
    RequestEvent,
    RequestLifecycle,
    Status,
)
from pipelines.policy import SlaPolicy
from pipelines.scenarios.draws import between
from pipelines.scenarios.events import World
from pipelines.scenarios.params import Cleanup, Params
from pipelines.scenarios.plan import GAP, Plan
from pipelines.scenarios.scenario_file import ALL_CATEGORIES, CalibrationError, PublishedFigure

_RESOLVED = (Status.RESOLVED_ON_TIME, Status.RESOLVED_LATE)
_MAX_CALIBRATION_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class FigureCheck:
    """A published figure and the value recomputed from generated events."""

    figure: PublishedFigure
    computed: int

    @property
    def ok(self) -> bool:
        return self.figure.holds(self.computed)


# --------------------------------------------------------------------------------------
# The lifecycle of the plan, kept up to date as plans are edited.


class Book:
    """Plans and the lifecycles the lifecycle function gives their events."""

    def __init__(self, plans: list[Plan], world: World, policy: SlaPolicy) -> None:
        self.plans = plans
        self.world = world
        self._policy = policy
        self.lives: list[list[RequestLifecycle]] = [self._life(p) for p in plans]

    def _life(self, plan: Plan) -> list[RequestLifecycle]:
        requests, actions = self.world.events(plan)
        return content_lifecycle(requests, actions, self._policy)

    def refresh(self, plans: Iterable[Plan]) -> None:
        for plan in plans:
            self.lives[plan.serial] = self._life(plan)

    def main_status(self, plan: Plan, as_of: datetime) -> Status | None:
        """Status of a plain plan's only demand."""
        return self.lives[plan.serial][0].status_as_of(as_of)

    def unresolved_by_category(self, as_of: datetime) -> Counter[Category]:
        counts: Counter[Category] = Counter()
        for lives in self.lives:
            for life in lives:
                if life.status_as_of(as_of) in UNRESOLVED:
                    counts[life.request.category] += 1
        return counts

    def events(self) -> tuple[list[RequestEvent], list[ActionEvent]]:
        requests: list[RequestEvent] = []
        actions: list[ActionEvent] = []
        for plan in self.plans:
            r, a = self.world.events(plan)
            requests += r
            actions += a
        return requests, actions


def calibrate(
    book: Book, figures: Sequence[PublishedFigure], params: Params, rng: random.Random
) -> int:
    """Move answers of plain demands until every "exactly" figure holds; return how many.

    Too many unresolved in a group: some of its unresolved demands get their take-down (or
    withdrawal) before the instant. Too few: some resolved ones lose their take-down (it is
    deferred to the clean-up). Each edit changes exactly one demand's status at the instant.
    """
    groups = _exact_groups(figures)
    if not groups:
        return 0
    as_of = groups[0][0]
    moved = 0
    for _ in range(_MAX_CALIBRATION_ROUNDS):
        counts = book.unresolved_by_category(as_of)
        edited: list[Plan] = []
        for _instant, members, target in groups:
            excess = sum(counts[c] for c in members) - target
            if excess > 0:
                pool = [
                    p
                    for p in book.plans
                    if p.plain
                    and p.category in members
                    and book.main_status(p, as_of) in UNRESOLVED
                    and _can_settle_before(p, as_of)
                ]
                _need(pool, excess, members)
                chosen = rng.sample(pool, excess)
                for plan in chosen:
                    _settle_before(plan, as_of, params, rng)
            elif excess < 0:
                pool = [
                    p
                    for p in book.plans
                    if p.plain
                    and p.category in members
                    and p.decline_at is None
                    and p.withdraw_at is None
                    and book.main_status(p, as_of) in _RESOLVED
                ]
                _need(pool, -excess, members)
                chosen = rng.sample(pool, -excess)
                for plan in chosen:
                    plan.cover_at = None
                    plan.deferred = True
            else:
                continue
            edited += chosen
        if not edited:
            return moved
        book.refresh(edited)
        moved += len(edited)
    raise CalibrationError(f"exact figures still missed after {_MAX_CALIBRATION_ROUNDS} rounds")


def _need(pool: Sequence[Plan], count: int, members: frozenset[Category]) -> None:
    if len(pool) < count:
        names = ", ".join(sorted(c.value for c in members))
        raise CalibrationError(f"{count} demands of {names} to move, only {len(pool)} movable")


def _exact_groups(
    figures: Sequence[PublishedFigure],
) -> list[tuple[datetime, frozenset[Category], int]]:
    """(instant, categories, target) for each "exactly" figure; ALL becomes the remainder."""
    exact = [f for f in figures if f.comparison == "exactly"]
    if any(f.metric != "unresolved" for f in exact):
        raise ValueError("only 'unresolved' figures can be calibrated exactly")
    if len({f.as_of for f in exact}) > 1:
        raise ValueError("all 'exactly' figures must share one as_of")
    named = {Category(f.category): f.value for f in exact if f.category != ALL_CATEGORIES}
    groups = [
        (f.as_of, frozenset({Category(f.category)}), f.value)
        for f in exact
        if f.category != ALL_CATEGORIES
    ]
    for f in exact:
        if f.category == ALL_CATEGORIES:
            rest = f.value - sum(named.values())
            if rest < 0:
                raise ValueError(f"figure {f.id}: the categories named add up to more than ALL")
            groups.append((f.as_of, frozenset(Category) - set(named), rest))
    return groups


def _can_settle_before(plan: Plan, as_of: datetime) -> bool:
    """Whether there is room before `as_of` for an answer after the demand and any refusal
    made before `as_of` (a later refusal is dropped by `_settle_before`)."""
    last = plan.decline_at if plan.decline_at is not None and plan.decline_at < as_of else None
    return (last or plan.issued_at) + GAP < as_of


def _settle_before(plan: Plan, as_of: datetime, params: Params, rng: random.Random) -> None:
    """Withdraw or take down `plan`'s demand before `as_of`, with a plausible delay."""
    if plan.withdraw_at is not None:
        plan.withdraw_at = between(rng, plan.issued_at + GAP, as_of)
        return
    if plan.decline_at is not None and plan.decline_at >= as_of:
        # It complies instead of refusing: a refusal after the take-down would (by the
        # lifecycle's last-event-decides rule) turn the request back to DECLINED.
        plan.decline_at = None
    b = params.behaviour(plan.category)
    after = (plan.decline_at or plan.issued_at) + GAP
    delay = b.delay.tail(rng) if plan.decline_at is not None else b.delay.draw(rng)
    plan.cover_at = after + delay if after + delay < as_of else between(rng, after, as_of)
    plan.deferred = False


def clean_up(book: Book, c: Cleanup, end: datetime, rng: random.Random) -> None:
    """One clean-up phase: a fixed number of the backlog taken down, then some later.

    Only events after `c.backlog_as_of` are added or moved, so no status at or before it
    changes (the final check recomputes every figure anyway).
    """
    backlog = [
        p
        for p in book.plans
        if any(life.status_as_of(c.backlog_as_of) in UNRESOLVED for life in book.lives[p.serial])
    ]
    done = sum(
        1
        for p in backlog
        for life in book.lives[p.serial]
        if life.status_as_of(c.backlog_as_of) in UNRESOLVED
        and life.status_as_of(c.until) in _RESOLVED
    )
    pool = [
        p
        for p in backlog
        if p.plain
        and p.withdraw_at is None
        and (p.decline_at is None or p.decline_at + GAP < c.until)
        and (p.cover_at is None or p.cover_at > c.until)
    ]
    chosen = rng.sample(pool, max(0, min(c.backlog_removed - done, len(pool))))
    for plan in chosen:
        start = max(c.start, plan.decline_at + GAP) if plan.decline_at is not None else c.start
        plan.cover_at = between(rng, start, c.until)
        plan.deferred = False
    picked = {p.serial for p in chosen}
    later: list[Plan] = []
    for plan in pool:
        if plan.serial in picked or plan.cover_at is not None:
            continue
        if rng.random() < c.later_share:
            start = max(c.until, (plan.decline_at or c.until) + GAP)
            plan.cover_at = between(rng, start, end)
            plan.deferred = False
            later.append(plan)
    book.refresh([*chosen, *later])


# --------------------------------------------------------------------------------------
# Figures from events.


def evaluate_figures(
    figures: Iterable[PublishedFigure],
    requests: Iterable[RequestEvent],
    actions: Iterable[ActionEvent],
    policy: SlaPolicy,
) -> tuple[FigureCheck, ...]:
    """Recompute each figure from events (any order, duplicates allowed).

    In: well-formed events and the SLA policy. Out: one FigureCheck per figure. Lifecycles
    come from `content_lifecycle`, one call per (platform, content_id).
    """
    by_content: dict[tuple[str, str], tuple[list[RequestEvent], list[ActionEvent]]] = {}
    for request in requests:
        by_content.setdefault(request.content_key, ([], []))[0].append(request)
    for action in actions:
        by_content.setdefault(action.content_key, ([], []))[1].append(action)
    lives = [
        life
        for reqs, acts in by_content.values()
        if reqs
        for life in content_lifecycle(reqs, acts, policy)
    ]
    checks: list[FigureCheck] = []
    for figure in figures:
        wanted = set(Category) if figure.category == ALL_CATEGORIES else {Category(figure.category)}
        chosen = [life for life in lives if life.request.category in wanted]
        if figure.metric == "unresolved":
            value = sum(1 for life in chosen if life.status_as_of(figure.as_of) in UNRESOLVED)
        else:
            since = figure.since or datetime.min.replace(tzinfo=UTC)
            value = len(
                {
                    life.request.request_id
                    for life in chosen
                    if since <= life.request.issued_at <= figure.as_of
                }
            )
        checks.append(FigureCheck(figure, value))
    return tuple(checks)

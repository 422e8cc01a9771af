"""The plan: one record per piece of content, and the planning steps that fill it.

A `Plan` holds one demand, the platform's answers and any episode. Plans are edited in
place while calibrating (hence not frozen); `events.World` derives their events on demand.
Planning draws each demand's natural fate from the parameters (`plan_demands`), adds
episodes (`add_episodes`), numbers the requests (`request_names`) and defers take-downs
inside slowdown windows (`apply_slowdowns`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipelines.model import ActionType, Category
from pipelines.scenarios.draws import between, hours, log_uniform, pick
from pipelines.scenarios.params import Params, Window
from pipelines.scenarios.scenario_file import CalibrationError

# Twitter's snowflake ids count milliseconds from this instant (2010-11-04T01:42:54.657Z).
_SNOWFLAKE_EPOCH = datetime(2010, 11, 4, 1, 42, 54, 657000, tzinfo=UTC)

# Gap kept between a moved answer and the events it must follow or precede, so that no
# two events of one request share a millisecond (ties would fall to event-id order).
GAP = timedelta(seconds=1)

# A repeat demand comes at least this long after the first and before the take-down.
_REPEAT_MARGIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Second:
    """A second demand on the same content (its own request_id)."""

    serial: int
    issued_at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class Reinstatement:
    """Content put back (e.g. on appeal) and taken down again."""

    reinstated_at: datetime
    reinstated_ids: tuple[str, str]
    removed_at: datetime
    removed_ids: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Ids:
    """Event ids (and platform action ids) fixed when a demand is planned."""

    issue: str
    withdraw: str
    decline: tuple[str, str]
    cover: tuple[str, str]


@dataclass(slots=True)
class Plan:
    """One piece of content: its demand, the platform's answers, and any episode."""

    serial: int
    content_id: str
    category: Category
    content_type: str
    issued_at: datetime
    ids: Ids
    withdraw_at: datetime | None = None
    decline_at: datetime | None = None
    cover_at: datetime | None = None
    cover_action: ActionType = ActionType.REMOVED
    cover_names_request: bool = True
    # Take-down postponed by a slowdown window (or by calibration); the clean-up decides.
    deferred: bool = False
    second: Second | None = None
    reinstatement: Reinstatement | None = None

    @property
    def plain(self) -> bool:
        """One demand, at most one refusal and one take-down: safe to edit alone."""
        return self.second is None and self.reinstatement is None


class IdMaker:
    """Unique random ids like "rq-5f0c..." drawn from the scenario's RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def __call__(self, prefix: str, bits: int = 64) -> str:
        while True:
            value = f"{prefix}-{self._rng.getrandbits(bits):0{bits // 4}x}"
            if value not in self._seen:
                self._seen.add(value)
                return value

    def tweet_id(self, posted_at: datetime) -> str:
        """A Twitter snowflake id of a post made at `posted_at` (unique)."""
        millis = max(0, (posted_at - _SNOWFLAKE_EPOCH) // timedelta(milliseconds=1))
        while True:
            value = str((millis << 22) | self._rng.getrandbits(22))
            if value not in self._seen:
                self._seen.add(value)
                return value

    def plan_ids(self) -> Ids:
        return Ids(
            issue=self("rq"),
            withdraw=self("rq"),
            decline=(self("ac"), self("tw", 48)),
            cover=(self("ac"), self("tw", 48)),
        )


# --------------------------------------------------------------------------------------
# Planning.


def plan_demands(params: Params, rng: random.Random, new_id: IdMaker) -> list[Plan]:
    """One plan per demand of every period, each with its natural (uncalibrated) fate."""
    s = params.setting
    plans: list[Plan] = []
    for period in params.periods:
        times = sorted(between(rng, period.start, period.end) for _ in range(period.requests))
        for issued_at in times:
            category = pick(rng, period.mix)
            posted_at = issued_at - hours(24 * log_uniform(rng, *s.content_age_days))
            plan = Plan(
                serial=len(plans),
                content_id=new_id.tweet_id(posted_at),
                category=category,
                content_type=pick(rng, s.content_types),
                issued_at=issued_at,
                ids=new_id.plan_ids(),
            )
            _plan_fate(plan, params, rng)
            plans.append(plan)
    return plans


def _plan_fate(plan: Plan, params: Params, rng: random.Random) -> None:
    """Withdrawn, ignored, refused (maybe taken down later) or taken down."""
    b = params.behaviour(plan.category)
    end = params.setting.end
    plan.cover_action = pick(rng, b.actions)
    plan.cover_names_request = rng.random() >= params.setting.unreferenced_share
    u = rng.random()
    if u < b.withdraw:
        at = plan.issued_at + hours(rng.uniform(*params.withdraw_after_hours))
        plan.withdraw_at = at if at < end else None
    elif u < b.withdraw + b.ignore:
        pass
    elif u < b.withdraw + b.ignore + b.decline:
        declined = plan.issued_at + b.delay.draw(rng)
        if declined < end:
            plan.decline_at = declined
            if rng.random() < b.cover_after_decline:
                plan.cover_at = declined + b.delay.tail(rng)
    else:
        plan.cover_at = plan.issued_at + b.delay.draw(rng)
    # The history stops at `end`: anything later has not happened yet.
    if plan.cover_at is not None and plan.cover_at >= end:
        plan.cover_at = None


def add_episodes(plans: list[Plan], params: Params, rng: random.Random, new_id: IdMaker) -> None:
    """Repeat demands, demands for content already down, reinstatements (disjoint plans)."""
    e = params.episodes
    end = params.setting.end
    taken: set[int] = set()

    def choose(count: int, eligible: Iterable[Plan]) -> list[Plan]:
        pool = [p for p in eligible if p.serial not in taken]
        if len(pool) < count:
            raise CalibrationError(f"only {len(pool)} demands fit an episode, {count} wanted")
        chosen = rng.sample(pool, count)
        taken.update(p.serial for p in chosen)
        return chosen

    def answered_once(p: Plan) -> bool:
        return p.plain and p.cover_at is not None and p.decline_at is None and p.withdraw_at is None

    serial = len(plans)
    # A second demand arrives while the first is still unanswered.
    for plan in choose(
        e.repeat_demand,
        (
            p
            for p in plans
            if answered_once(p)
            and p.issued_at < e.before
            and p.cover_at is not None
            and p.cover_at - p.issued_at > 2 * _REPEAT_MARGIN
        ),
    ):
        assert plan.cover_at is not None
        at = between(rng, plan.issued_at + _REPEAT_MARGIN, plan.cover_at - _REPEAT_MARGIN)
        plan.second = Second(serial, at, new_id("rq"))
        serial += 1
    # A demand for content that is already down.
    latest = timedelta(days=e.already_removed_after_days[1])
    for plan in choose(
        e.already_removed,
        (
            p
            for p in plans
            if answered_once(p)
            and p.cover_at is not None
            and p.cover_at + latest < min(e.before, end)
            and p.cover_action is not ActionType.CONTENT_NOT_FOUND
        ),
    ):
        assert plan.cover_at is not None
        at = plan.cover_at + hours(24 * rng.uniform(*e.already_removed_after_days))
        plan.second = Second(serial, at, new_id("rq"))
        serial += 1
    # Taken down, reinstated, taken down again, all well before the figures.
    longest = timedelta(days=e.reinstated_after_days[1] + e.removed_again_after_days[1])
    for plan in choose(
        e.reinstated,
        (
            p
            for p in plans
            if answered_once(p)
            and p.cover_at is not None
            and p.cover_at + longest < e.reinstated_before
            and p.cover_action is not ActionType.CONTENT_NOT_FOUND
        ),
    ):
        assert plan.cover_at is not None
        back = plan.cover_at + hours(24 * rng.uniform(*e.reinstated_after_days))
        again = back + hours(24 * rng.uniform(*e.removed_again_after_days))
        ids = ((new_id("ac"), new_id("tw", 48)), (new_id("ac"), new_id("tw", 48)))
        plan.reinstatement = Reinstatement(back, ids[0], again, ids[1])


def request_names(plans: Sequence[Plan]) -> dict[int, str]:
    """Request ids like RKN-2021-000123, numbered per year in order of issue."""
    issued = [(p.issued_at, p.serial) for p in plans]
    issued += [(p.second.issued_at, p.second.serial) for p in plans if p.second is not None]
    per_year: Counter[int] = Counter()
    names: dict[int, str] = {}
    for at, serial in sorted(issued):
        per_year[at.year] += 1
        names[serial] = f"RKN-{at.year}-{per_year[at.year]:06d}"
    return names


def apply_slowdowns(plans: Iterable[Plan], windows: Sequence[Window], rng: random.Random) -> None:
    """Defer most take-downs planned inside a slowdown window (plain demands only)."""
    for plan in plans:
        if not plan.plain or plan.cover_at is None:
            continue
        for window in windows:
            if window.start <= plan.cover_at < window.end and rng.random() >= window.keep:
                plan.cover_at = None
                plan.deferred = True
                break

"""Seed scenarios: synthetic removal demands and answers that reproduce published figures.

In: a scenario file (TOML, e.g. `roskomnadzor_twitter_2021.toml`) stating published figures
with their sources, and the parameters of a synthetic history. Out (`generate`): two Avro
container files of raw Kafka messages, `requests.avro` (topic removal.requests) and
`actions.avro` (topic removal.actions), ordered by arrival time, with late, out-of-order and
duplicated deliveries, a few malformed messages, and a share of requests written with an
older schema version.

How the figures are met: every demand's fate is planned from the scenario's parameters;
the lifecycle function is run over the planned events of each content; then the answers
of chosen plain demands (one demand on its content, no episode) are moved across the
calibration instant until every "exactly" figure holds. Finally every figure is recomputed
from the events about to be written, and `CalibrationError` is raised if one is missed.
The malformed messages are made after that and are never part of the calibrated events.

Deterministic: one `random.Random(seed)` drives everything and the container files get a
sync marker derived from the seed, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import math
import random
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fastavro import writer as avro_writer

from connectors.avro_codec import encode_single_object
from connectors.avro_files import CODEC, RAW_MESSAGE_SUBJECT, RawMessage
from connectors.schema_store import SchemaStore
from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    UNRESOLVED,
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

SCENARIO_DIR = Path(__file__).resolve().parent
# Every scenario file shipped next to this module, by name (the file's stem).
# Scenario names use dashes (`--scenario roskomnadzor-twitter-2021`); files use underscores.
SCENARIOS: dict[str, Path] = {
    p.stem.replace("_", "-"): p for p in sorted(SCENARIO_DIR.glob("*.toml"))
}

REQUESTS_TOPIC = "removal.requests"
ACTIONS_TOPIC = "removal.actions"
REQUESTS_SUBJECT = "removal.requests-value"
ACTIONS_SUBJECT = "removal.actions-value"
REQUESTS_FILE = "requests.avro"
ACTIONS_FILE = "actions.avro"

METRICS = ("unresolved", "requests_issued")
COMPARISONS = ("exactly", "more_than")
ALL_CATEGORIES = "ALL"

# Fields removal.requests-value v1 does not have; a v1 reader defaults them.
_V2_ONLY_FIELDS = ("event_type", "authority_kind", "withdrawn_at")
_COVERING = (
    ActionType.REMOVED,
    ActionType.RESTRICTED,
    ActionType.ACCOUNT_SUSPENDED,
    ActionType.CONTENT_NOT_FOUND,
)
_RESOLVED = (Status.RESOLVED_ON_TIME, Status.RESOLVED_LATE)
# Twitter's snowflake ids count milliseconds from this instant (2010-11-04T01:42:54.657Z).
_SNOWFLAKE_EPOCH = datetime(2010, 11, 4, 1, 42, 54, 657000, tzinfo=UTC)
_MALFORMED_KINDS = {
    REQUESTS_TOPIC: ("truncated", "trailing_bytes", "unknown_fingerprint", "timestamp_1970"),
    ACTIONS_TOPIC: (
        "truncated",
        "trailing_bytes",
        "unknown_fingerprint",
        "timestamp_1970",
        "restricted_without_jurisdiction",
    ),
}
_MALFORMED_TABLES = {"requests": REQUESTS_TOPIC, "actions": ACTIONS_TOPIC}
_YEAR_1970 = (datetime(1970, 1, 1, tzinfo=UTC), datetime(1971, 1, 1, tzinfo=UTC))
# Gap kept between a moved answer and the events it must follow or precede, so that no
# two events of one request share a millisecond (ties would fall to event-id order).
_GAP = timedelta(seconds=1)
_MAX_CALIBRATION_ROUNDS = 4
# A repeat demand comes at least this long after the first and before the take-down.
_REPEAT_MARGIN = timedelta(hours=1)

T = TypeVar("T")


class CalibrationError(RuntimeError):
    """The planned events do not reproduce a published figure."""


# --------------------------------------------------------------------------------------
# The scenario file: published figures and context.


@dataclass(frozen=True, slots=True)
class PublishedFigure:
    """One published figure and its source. Example: PublishedFigure(
    id="rkn-2021-03-01-unresolved-all", as_of=2021-03-01T00:00Z, metric="unresolved",
    category="ALL", comparison="exactly", value=2862, source="...", quote="...", since=None)

    `since` bounds "requests_issued" figures from below (issued in [since, as_of]).
    """

    id: str
    as_of: datetime
    metric: str
    category: str
    comparison: str
    value: int
    source: str
    quote: str
    since: datetime | None = None

    def holds(self, computed: int) -> bool:
        """Whether `computed` meets the figure as published."""
        if self.comparison == "exactly":
            return computed == self.value
        return computed > self.value


@dataclass(frozen=True, slots=True)
class ContextNote:
    """A reported fact the scenario follows loosely (not checked)."""

    as_of: datetime
    what: str
    source: str


@dataclass(frozen=True, slots=True)
class FigureCheck:
    """A published figure and the value recomputed from generated events."""

    figure: PublishedFigure
    computed: int

    @property
    def ok(self) -> bool:
        return self.figure.holds(self.computed)


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file: its figures, context notes and (raw) generation parameters."""

    name: str
    path: Path
    title: str
    figures: tuple[PublishedFigure, ...]
    context: tuple[ContextNote, ...]
    raw: Mapping[str, Any] = field(repr=False)


def load_scenario(name: str) -> Scenario:
    """Parse the scenario file registered under `name` in SCENARIOS (KeyError if unknown)."""
    try:
        path = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return load_scenario_file(path)


def load_scenario_file(path: Path) -> Scenario:
    """Parse a scenario file; ValueError naming the file when a figure is malformed."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    where = str(path)
    figures = tuple(_parse_figure(f, where) for f in raw.get("figure", []))
    ids = [f.id for f in figures]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: figure ids must be unique")
    context = tuple(
        ContextNote(_time(c, "as_of", where), str(c["what"]), str(c["source"]))
        for c in raw.get("context", [])
    )
    title = str(raw.get("scenario", {}).get("title", path.stem))
    return Scenario(path.stem, path, title, figures, context, raw)


def _parse_figure(raw: Mapping[str, Any], where: str) -> PublishedFigure:
    where = f"{where}: figure {raw.get('id')!r}"
    figure = PublishedFigure(
        id=str(raw["id"]),
        as_of=_time(raw, "as_of", where),
        metric=str(raw["metric"]),
        category=str(raw["category"]),
        comparison=str(raw["comparison"]),
        value=int(raw["value"]),
        source=str(raw["source"]),
        quote=str(raw["quote"]),
        since=_time(raw, "since", where) if "since" in raw else None,
    )
    if figure.metric not in METRICS:
        raise ValueError(f"{where}: metric must be one of {METRICS}")
    if figure.comparison not in COMPARISONS:
        raise ValueError(f"{where}: comparison must be one of {COMPARISONS}")
    if figure.category != ALL_CATEGORIES and figure.category not in Category.__members__:
        raise ValueError(f"{where}: unknown category {figure.category!r}")
    if figure.metric == "requests_issued" and figure.since is None:
        raise ValueError(f"{where}: a requests_issued figure needs `since`")
    return figure


def _time(raw: Mapping[str, Any], key: str, where: str) -> datetime:
    value = raw[key]
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{where}: {key} must be an offset date-time, e.g. 2021-03-01T00:00:00Z")
    return value.astimezone(UTC)


def _pair(raw: Mapping[str, Any], key: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in raw[key])
    if not 0 <= lo <= hi:
        raise ValueError(f"{key} must be [low, high] with 0 <= low <= high")
    return lo, hi


# --------------------------------------------------------------------------------------
# Generation parameters (the rest of the scenario file), parsed and checked once.


@dataclass(frozen=True, slots=True)
class _Setting:
    start: datetime
    end: datetime
    platform: str
    authority: str
    authority_kind: AuthorityKind
    jurisdiction: str
    legal_basis: str
    requested_action: str
    content_types: tuple[tuple[str, ...], tuple[float, ...]]
    content_age_days: tuple[float, float]
    unreferenced_share: float


@dataclass(frozen=True, slots=True)
class _Period:
    start: datetime
    end: datetime
    requests: int
    mix: tuple[tuple[Category, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class _Delay:
    """Hours to an answer: lognormal(median, sigma), or with `tail_share` log-uniform tail."""

    median_hours: float
    sigma: float
    tail_share: float
    tail_hours: tuple[float, float]

    def draw(self, rng: random.Random) -> timedelta:
        if rng.random() < self.tail_share:
            return self.tail(rng)
        return _hours(self.median_hours * math.exp(self.sigma * rng.gauss(0.0, 1.0)))

    def tail(self, rng: random.Random) -> timedelta:
        return _hours(_log_uniform(rng, *self.tail_hours))


@dataclass(frozen=True, slots=True)
class _Behaviour:
    """How the platform answers demands of one category (see the scenario file)."""

    decline: float
    cover_after_decline: float
    ignore: float
    withdraw: float
    delay: _Delay
    actions: tuple[tuple[ActionType, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class _Episodes:
    before: datetime
    repeat_demand: int
    already_removed: int
    already_removed_after_days: tuple[float, float]
    reinstated: int
    reinstated_before: datetime
    reinstated_after_days: tuple[float, float]
    removed_again_after_days: tuple[float, float]


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime
    keep: float


@dataclass(frozen=True, slots=True)
class _Cleanup:
    backlog_as_of: datetime
    start: datetime
    until: datetime
    backlog_removed: int
    later_share: float


@dataclass(frozen=True, slots=True)
class _Delivery:
    lag_median_seconds: float
    lag_sigma: float
    hours_share: float
    hours_range: tuple[float, float]
    days_share: float
    days_range: tuple[float, float]
    duplicate_rate: float
    v1_share: float

    def lag(self, rng: random.Random) -> timedelta:
        u = rng.random()
        if u < self.days_share:
            return _hours(24 * rng.uniform(*self.days_range))
        if u < self.days_share + self.hours_share:
            return _hours(rng.uniform(*self.hours_range))
        seconds = self.lag_median_seconds * math.exp(self.lag_sigma * rng.gauss(0.0, 1.0))
        return max(timedelta(milliseconds=1), timedelta(milliseconds=round(seconds * 1000)))


@dataclass(frozen=True, slots=True)
class _Params:
    setting: _Setting
    periods: tuple[_Period, ...]
    behaviours: Mapping[str, _Behaviour]
    withdraw_after_hours: tuple[float, float]
    episodes: _Episodes
    slowdowns: tuple[_Window, ...]
    cleanups: tuple[_Cleanup, ...]
    delivery: _Delivery
    malformed: Mapping[str, Mapping[str, int]]

    def behaviour(self, category: Category) -> _Behaviour:
        return self.behaviours.get(category.value) or self.behaviours["DEFAULT"]

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> _Params:
        s = raw["scenario"]
        setting = _Setting(
            start=_time(s, "start", where),
            end=_time(s, "end", where),
            platform=str(s["platform"]),
            authority=str(s["authority"]),
            authority_kind=AuthorityKind(s["authority_kind"]),
            jurisdiction=str(s["jurisdiction"]),
            legal_basis=str(s["legal_basis"]),
            requested_action=str(s["requested_action"]),
            content_types=_weights(s["content_types"], str),
            content_age_days=_pair(s, "content_age_days"),
            unreferenced_share=float(s["unreferenced_share"]),
        )
        mixes = {name: _weights(m, Category) for name, m in raw["mix"].items()}
        periods = tuple(
            _Period(
                _time(p, "start", where),
                _time(p, "end", where),
                int(p["requests"]),
                mixes[p["mix"]],
            )
            for p in raw["period"]
        )
        delays = {
            name: _Delay(
                float(d["median_hours"]),
                float(d["sigma"]),
                float(d["tail_share"]),
                (float(d["tail_min_hours"]), float(d["tail_max_hours"])),
            )
            for name, d in raw["delays"].items()
        }
        behaviours = {
            name: _Behaviour(
                decline=float(b["decline"]),
                cover_after_decline=float(b["cover_after_decline"]),
                ignore=float(b["ignore"]),
                withdraw=float(b["withdraw"]),
                delay=delays[b["delay"]],
                actions=_weights(b["actions"], ActionType),
            )
            for name, b in raw["categories"].items()
        }
        if "DEFAULT" not in behaviours:
            raise ValueError(f"{where}: [categories.DEFAULT] is required")
        for name, b in behaviours.items():
            if name != "DEFAULT" and name not in Category.__members__:
                raise ValueError(f"{where}: unknown category {name!r} in [categories]")
            if not set(b.actions[0]) <= set(_COVERING):
                raise ValueError(f"{where}: [categories.{name}] actions must be take-downs")
        e = raw["episodes"]
        episodes = _Episodes(
            before=_time(e, "before", where),
            repeat_demand=int(e["repeat_demand"]),
            already_removed=int(e["already_removed"]),
            already_removed_after_days=_pair(e, "already_removed_after_days"),
            reinstated=int(e["reinstated"]),
            reinstated_before=_time(e, "reinstated_before", where),
            reinstated_after_days=_pair(e, "reinstated_after_days"),
            removed_again_after_days=_pair(e, "removed_again_after_days"),
        )
        slowdowns = tuple(
            _Window(_time(w, "start", where), _time(w, "end", where), float(w["keep"]))
            for w in raw.get("slowdown", [])
        )
        cleanups = tuple(
            _Cleanup(
                backlog_as_of=_time(c, "backlog_as_of", where),
                start=_time(c, "start", where),
                until=_time(c, "until", where),
                backlog_removed=int(c["backlog_removed"]),
                later_share=float(c["later_share"]),
            )
            for c in raw.get("cleanup", [])
        )
        for c in cleanups:
            if not c.backlog_as_of < c.start < c.until <= setting.end:
                raise ValueError(f"{where}: [[cleanup]] needs backlog_as_of < start < until <= end")
        d = raw["delivery"]
        delivery = _Delivery(
            lag_median_seconds=float(d["lag_median_seconds"]),
            lag_sigma=float(d["lag_sigma"]),
            hours_share=float(d["hours_share"]),
            hours_range=_pair(d, "hours_range"),
            days_share=float(d["days_share"]),
            days_range=_pair(d, "days_range"),
            duplicate_rate=float(d["duplicate_rate"]),
            v1_share=float(d["v1_share"]),
        )
        malformed: dict[str, dict[str, int]] = {}
        for table, counts in raw.get("malformed", {}).items():
            topic = _MALFORMED_TABLES.get(table)
            if topic is None:
                raise ValueError(f"{where}: [malformed.{table}]: expected requests or actions")
            unknown = set(counts) - set(_MALFORMED_KINDS[topic])
            if unknown:
                raise ValueError(f"{where}: [malformed.{table}]: unknown kinds {sorted(unknown)}")
            malformed[topic] = {kind: int(n) for kind, n in counts.items()}
        return cls(
            setting=setting,
            periods=periods,
            behaviours=behaviours,
            withdraw_after_hours=_pair(raw["withdrawals"], "after_hours"),
            episodes=episodes,
            slowdowns=slowdowns,
            cleanups=cleanups,
            delivery=delivery,
            malformed=malformed,
        )


def _weights(
    raw: Mapping[str, Any], kind: Callable[[str], T]
) -> tuple[tuple[T, ...], tuple[float, ...]]:
    """(values, cumulative weights) from a {name: weight} table, for `Random.choices`."""
    values = tuple(kind(name) for name in raw)
    cumulative: list[float] = []
    total = 0.0
    for weight in raw.values():
        total += float(weight)
        cumulative.append(total)
    if not values or total <= 0:
        raise ValueError(f"weights {dict(raw)} must be positive")
    return values, tuple(cumulative)


def _pick(rng: random.Random, weighted: tuple[tuple[T, ...], tuple[float, ...]]) -> T:
    return rng.choices(weighted[0], cum_weights=weighted[1])[0]


def _hours(hours: float) -> timedelta:
    # Event times are Avro timestamp-millis: plan on whole milliseconds so that the decoded
    # events are exactly the planned ones.
    return max(timedelta(milliseconds=1), timedelta(milliseconds=round(hours * 3_600_000)))


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    """A whole-millisecond instant in [lo, hi) (lo when the interval is empty)."""
    span = (hi - lo) // timedelta(milliseconds=1)
    return lo + timedelta(milliseconds=rng.randrange(span)) if span > 0 else lo


# --------------------------------------------------------------------------------------
# The plan: one record per piece of content, edited in place while calibrating (hence not
# frozen); events are derived from it on demand.


@dataclass(frozen=True, slots=True)
class _Second:
    """A second demand on the same content (its own request_id)."""

    serial: int
    issued_at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class _Reinstatement:
    """Content put back (e.g. on appeal) and taken down again."""

    reinstated_at: datetime
    reinstated_ids: tuple[str, str]
    removed_at: datetime
    removed_ids: tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Ids:
    """Event ids (and platform action ids) fixed when a demand is planned."""

    issue: str
    withdraw: str
    decline: tuple[str, str]
    cover: tuple[str, str]


@dataclass(slots=True)
class _Plan:
    """One piece of content: its demand, the platform's answers, and any episode."""

    serial: int
    content_id: str
    category: Category
    content_type: str
    issued_at: datetime
    ids: _Ids
    withdraw_at: datetime | None = None
    decline_at: datetime | None = None
    cover_at: datetime | None = None
    cover_action: ActionType = ActionType.REMOVED
    cover_names_request: bool = True
    # Take-down postponed by a slowdown window (or by calibration); the clean-up decides.
    deferred: bool = False
    second: _Second | None = None
    reinstatement: _Reinstatement | None = None

    @property
    def plain(self) -> bool:
        """One demand, at most one refusal and one take-down: safe to edit alone."""
        return self.second is None and self.reinstatement is None


class _IdMaker:
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

    def plan_ids(self) -> _Ids:
        return _Ids(
            issue=self("rq"),
            withdraw=self("rq"),
            decline=(self("ac"), self("tw", 48)),
            cover=(self("ac"), self("tw", 48)),
        )


@dataclass(frozen=True, slots=True)
class _World:
    """What every event of the scenario shares, and the final request ids by serial."""

    setting: _Setting
    names: Mapping[int, str]

    def request(self, plan: _Plan, serial: int, event_id: str, issued_at: datetime) -> RequestEvent:
        s = self.setting
        return RequestEvent(
            event_id=event_id,
            request_id=self.names[serial],
            event_type=RequestEventType.ISSUED,
            authority=s.authority,
            authority_kind=s.authority_kind,
            jurisdiction=s.jurisdiction,
            platform=s.platform,
            content_id=plan.content_id,
            content_type=plan.content_type,
            category=plan.category,
            legal_basis=s.legal_basis,
            requested_action=s.requested_action,
            issued_at=issued_at,
        )

    def action(
        self,
        plan: _Plan,
        ids: tuple[str, str],
        action: ActionType,
        at: datetime,
        *,
        names_request: bool,
        jurisdiction: str | None,
    ) -> ActionEvent:
        return ActionEvent(
            event_id=ids[0],
            action_id=ids[1],
            request_id=self.names[plan.serial] if names_request else None,
            platform=self.setting.platform,
            content_id=plan.content_id,
            action=action,
            jurisdiction=jurisdiction,
            acted_at=at,
        )

    def events(self, plan: _Plan) -> tuple[list[RequestEvent], list[ActionEvent]]:
        """The planned events of one content."""
        issued = self.request(plan, plan.serial, plan.ids.issue, plan.issued_at)
        requests = [issued]
        if plan.withdraw_at is not None:
            requests.append(
                replace(
                    issued,
                    event_id=plan.ids.withdraw,
                    event_type=RequestEventType.WITHDRAWN,
                    withdrawn_at=plan.withdraw_at,
                )
            )
        if plan.second is not None:
            second = plan.second
            requests.append(self.request(plan, second.serial, second.event_id, second.issued_at))
        actions: list[ActionEvent] = []
        if plan.decline_at is not None:
            # A refusal always names its demand: an unnamed one would refuse every later
            # demand on the content too.
            actions.append(
                self.action(
                    plan,
                    plan.ids.decline,
                    ActionType.DECLINED,
                    plan.decline_at,
                    names_request=True,
                    jurisdiction=self.setting.jurisdiction,
                )
            )
        if plan.cover_at is not None:
            restricted = plan.cover_action is ActionType.RESTRICTED
            actions.append(
                self.action(
                    plan,
                    plan.ids.cover,
                    plan.cover_action,
                    plan.cover_at,
                    names_request=plan.cover_names_request,
                    jurisdiction=self.setting.jurisdiction if restricted else None,
                )
            )
        if plan.reinstatement is not None:
            r = plan.reinstatement
            # Put back where it had been withheld (or everywhere after a global take-down).
            where = (
                self.setting.jurisdiction if plan.cover_action is ActionType.RESTRICTED else None
            )
            actions.append(
                self.action(
                    plan,
                    r.reinstated_ids,
                    ActionType.REINSTATED,
                    r.reinstated_at,
                    names_request=False,
                    jurisdiction=where,
                )
            )
            actions.append(
                self.action(
                    plan,
                    r.removed_ids,
                    ActionType.REMOVED,
                    r.removed_at,
                    names_request=False,
                    jurisdiction=None,
                )
            )
        return requests, actions


# --------------------------------------------------------------------------------------
# Planning.


def _plan_demands(params: _Params, rng: random.Random, new_id: _IdMaker) -> list[_Plan]:
    """One plan per demand of every period, each with its natural (uncalibrated) fate."""
    s = params.setting
    plans: list[_Plan] = []
    for period in params.periods:
        times = sorted(_between(rng, period.start, period.end) for _ in range(period.requests))
        for issued_at in times:
            category = _pick(rng, period.mix)
            posted_at = issued_at - _hours(24 * _log_uniform(rng, *s.content_age_days))
            plan = _Plan(
                serial=len(plans),
                content_id=new_id.tweet_id(posted_at),
                category=category,
                content_type=_pick(rng, s.content_types),
                issued_at=issued_at,
                ids=new_id.plan_ids(),
            )
            _plan_fate(plan, params, rng)
            plans.append(plan)
    return plans


def _plan_fate(plan: _Plan, params: _Params, rng: random.Random) -> None:
    """Withdrawn, ignored, refused (maybe taken down later) or taken down."""
    b = params.behaviour(plan.category)
    end = params.setting.end
    plan.cover_action = _pick(rng, b.actions)
    plan.cover_names_request = rng.random() >= params.setting.unreferenced_share
    u = rng.random()
    if u < b.withdraw:
        at = plan.issued_at + _hours(rng.uniform(*params.withdraw_after_hours))
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


def _add_episodes(
    plans: list[_Plan], params: _Params, rng: random.Random, new_id: _IdMaker
) -> None:
    """Repeat demands, demands for content already down, reinstatements (disjoint plans)."""
    e = params.episodes
    end = params.setting.end
    taken: set[int] = set()

    def choose(count: int, eligible: Iterable[_Plan]) -> list[_Plan]:
        pool = [p for p in eligible if p.serial not in taken]
        if len(pool) < count:
            raise CalibrationError(f"only {len(pool)} demands fit an episode, {count} wanted")
        chosen = rng.sample(pool, count)
        taken.update(p.serial for p in chosen)
        return chosen

    def answered_once(p: _Plan) -> bool:
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
        at = _between(rng, plan.issued_at + _REPEAT_MARGIN, plan.cover_at - _REPEAT_MARGIN)
        plan.second = _Second(serial, at, new_id("rq"))
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
        at = plan.cover_at + _hours(24 * rng.uniform(*e.already_removed_after_days))
        plan.second = _Second(serial, at, new_id("rq"))
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
        back = plan.cover_at + _hours(24 * rng.uniform(*e.reinstated_after_days))
        again = back + _hours(24 * rng.uniform(*e.removed_again_after_days))
        ids = ((new_id("ac"), new_id("tw", 48)), (new_id("ac"), new_id("tw", 48)))
        plan.reinstatement = _Reinstatement(back, ids[0], again, ids[1])


def _request_names(plans: Sequence[_Plan]) -> dict[int, str]:
    """Request ids like RKN-2021-000123, numbered per year in order of issue."""
    issued = [(p.issued_at, p.serial) for p in plans]
    issued += [(p.second.issued_at, p.second.serial) for p in plans if p.second is not None]
    per_year: Counter[int] = Counter()
    names: dict[int, str] = {}
    for at, serial in sorted(issued):
        per_year[at.year] += 1
        names[serial] = f"RKN-{at.year}-{per_year[at.year]:06d}"
    return names


def _apply_slowdowns(
    plans: Iterable[_Plan], windows: Sequence[_Window], rng: random.Random
) -> None:
    """Defer most take-downs planned inside a slowdown window (plain demands only)."""
    for plan in plans:
        if not plan.plain or plan.cover_at is None:
            continue
        for window in windows:
            if window.start <= plan.cover_at < window.end and rng.random() >= window.keep:
                plan.cover_at = None
                plan.deferred = True
                break


# --------------------------------------------------------------------------------------
# The lifecycle of the plan, kept up to date as plans are edited.


class _Book:
    """Plans and the lifecycles the lifecycle function gives their events."""

    def __init__(self, plans: list[_Plan], world: _World, policy: SlaPolicy) -> None:
        self.plans = plans
        self.world = world
        self._policy = policy
        self.lives: list[list[RequestLifecycle]] = [self._life(p) for p in plans]

    def _life(self, plan: _Plan) -> list[RequestLifecycle]:
        requests, actions = self.world.events(plan)
        return content_lifecycle(requests, actions, self._policy)

    def refresh(self, plans: Iterable[_Plan]) -> None:
        for plan in plans:
            self.lives[plan.serial] = self._life(plan)

    def main_status(self, plan: _Plan, as_of: datetime) -> Status | None:
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


def _calibrate(
    book: _Book, figures: Sequence[PublishedFigure], params: _Params, rng: random.Random
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
        edited: list[_Plan] = []
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


def _need(pool: Sequence[_Plan], count: int, members: frozenset[Category]) -> None:
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


def _can_settle_before(plan: _Plan, as_of: datetime) -> bool:
    """Whether there is room before `as_of` for an answer after the demand and any refusal
    made before `as_of` (a later refusal is dropped by `_settle_before`)."""
    last = plan.decline_at if plan.decline_at is not None and plan.decline_at < as_of else None
    return (last or plan.issued_at) + _GAP < as_of


def _settle_before(plan: _Plan, as_of: datetime, params: _Params, rng: random.Random) -> None:
    """Withdraw or take down `plan`'s demand before `as_of`, with a plausible delay."""
    if plan.withdraw_at is not None:
        plan.withdraw_at = _between(rng, plan.issued_at + _GAP, as_of)
        return
    if plan.decline_at is not None and plan.decline_at >= as_of:
        # It complies instead of refusing: a refusal after the take-down would (by the
        # lifecycle's last-event-decides rule) turn the request back to DECLINED.
        plan.decline_at = None
    b = params.behaviour(plan.category)
    after = (plan.decline_at or plan.issued_at) + _GAP
    delay = b.delay.tail(rng) if plan.decline_at is not None else b.delay.draw(rng)
    plan.cover_at = after + delay if after + delay < as_of else _between(rng, after, as_of)
    plan.deferred = False


def _clean_up(book: _Book, c: _Cleanup, end: datetime, rng: random.Random) -> None:
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
        and (p.decline_at is None or p.decline_at + _GAP < c.until)
        and (p.cover_at is None or p.cover_at > c.until)
    ]
    chosen = rng.sample(pool, max(0, min(c.backlog_removed - done, len(pool))))
    for plan in chosen:
        start = max(c.start, plan.decline_at + _GAP) if plan.decline_at is not None else c.start
        plan.cover_at = _between(rng, start, c.until)
        plan.deferred = False
    picked = {p.serial for p in chosen}
    later: list[_Plan] = []
    for plan in pool:
        if plan.serial in picked or plan.cover_at is not None:
            continue
        if rng.random() < c.later_share:
            start = max(c.until, (plan.decline_at or c.until) + _GAP)
            plan.cover_at = _between(rng, start, end)
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


# --------------------------------------------------------------------------------------
# Delivery: payloads, arrival times, duplicates, malformed messages, container files.


@dataclass(frozen=True, slots=True)
class GeneratedScenario:
    """What `generate` wrote.

    `valid_requests` / `valid_actions`: well-formed events written (each once; request
    events include withdrawals); `duplicates`: extra deliveries of those, both files;
    `malformed`: malformed messages, both files; `adjusted`: demands whose planned answer
    calibration moved; `checks`: the published figures recomputed from the written events.
    """

    scenario: str
    seed: int
    requests_path: Path
    actions_path: Path
    valid_requests: int
    valid_actions: int
    duplicates: int
    malformed: int
    adjusted: int
    checks: tuple[FigureCheck, ...]


@dataclass(frozen=True, slots=True)
class _Outgoing:
    arrival: datetime
    seq: int
    message: RawMessage


class _Outbox:
    """Messages of one topic with their arrival times; sorted by arrival when written."""

    def __init__(self, topic: str, delivery: _Delivery, rng: random.Random) -> None:
        self.topic = topic
        self.delivery = delivery
        self._rng = rng
        self.items: list[_Outgoing] = []
        self.duplicates = 0

    def post(self, key: str, value: bytes, arrival: datetime, *, may_repeat: bool) -> None:
        self._add(key, value, arrival)
        if may_repeat and self._rng.random() < self.delivery.duplicate_rate:
            # Redelivered byte for byte, later (a producer retry or a consumer replay).
            self._add(key, value, arrival + self.delivery.lag(self._rng))
            self.duplicates += 1

    def _add(self, key: str, value: bytes, arrival: datetime) -> None:
        message = RawMessage(self.topic, key.encode("utf-8"), value, arrival)
        self.items.append(_Outgoing(arrival, len(self.items), message))

    def ordered(self) -> list[RawMessage]:
        return [o.message for o in sorted(self.items, key=lambda o: (o.arrival, o.seq))]


def _encode_request(
    event: RequestEvent, store: SchemaStore, rng: random.Random, v1_share: float
) -> bytes:
    record = event.to_avro()
    if event.event_type is RequestEventType.ISSUED and rng.random() < v1_share:
        # An older producer: schema v1 has no event_type, authority_kind or withdrawn_at,
        # so readers see authority_kind OTHER (the RU deadline applies to any authority).
        for name in _V2_ONLY_FIELDS:
            del record[name]
        return encode_single_object(record, REQUESTS_SUBJECT, store, version=1)
    return encode_single_object(record, REQUESTS_SUBJECT, store)


def _key(platform: str, content_id: str) -> str:
    return f"{platform}/{content_id}"


def _damaged(payload: bytes, kind: str, store: SchemaStore, rng: random.Random) -> bytes:
    """A byte-level fault of a valid single-object payload."""
    if kind == "truncated":
        # Keep the 10-byte header and at least one body byte, lose at least one.
        return payload[: rng.randrange(11, len(payload))]
    if kind == "trailing_bytes":
        return payload + rng.randbytes(rng.randint(1, 8))
    if kind == "unknown_fingerprint":
        while True:
            fingerprint = rng.randbytes(8)
            if store.by_fingerprint(fingerprint) is None:
                return payload[:2] + fingerprint + payload[10:]
    raise ValueError(f"not a byte-level fault: {kind}")


def _post_malformed(
    outbox: _Outbox,
    counts: Mapping[str, int],
    valid: Sequence[RequestEvent | ActionEvent],
    targets: list[_Plan],
    world: _World,
    calibration_instant: datetime,
    store: SchemaStore,
    rng: random.Random,
    new_id: _IdMaker,
) -> int:
    """Add the malformed messages of one file; return how many.

    Byte-level faults damage a copy (with a fresh event_id) of a random valid event. The
    well-encoded bad events target demands unresolved at the calibration instant, so that
    letting one through would change a published figure.
    """
    s = world.setting
    delivery = outbox.delivery
    subject = REQUESTS_SUBJECT if outbox.topic == REQUESTS_TOPIC else ACTIONS_SUBJECT
    prefix = "rq" if outbox.topic == REQUESTS_TOPIC else "ac"
    posted = 0
    for kind in _MALFORMED_KINDS[outbox.topic]:
        for _ in range(counts.get(kind, 0)):
            if kind in ("truncated", "trailing_bytes", "unknown_fingerprint"):
                base = rng.choice(valid)
                copy = replace(base, event_id=new_id(prefix))
                payload = encode_single_object(copy.to_avro(), subject, store)
                arrival = base.event_time + delivery.lag(rng)
                value = _damaged(payload, kind, store, rng)
                outbox.post(_key(s.platform, base.content_id), value, arrival, may_repeat=False)
            elif outbox.topic == REQUESTS_TOPIC:  # timestamp_1970: a new overdue demand
                issued_at = _between(rng, *_YEAR_1970)
                event = RequestEvent(
                    event_id=new_id("rq"),
                    request_id=f"RKN-{issued_at.year}-{posted + 1:06d}",
                    event_type=RequestEventType.ISSUED,
                    authority=s.authority,
                    authority_kind=s.authority_kind,
                    jurisdiction=s.jurisdiction,
                    platform=s.platform,
                    content_id=new_id.tweet_id(_between(rng, s.start, s.end)),
                    content_type=_pick(rng, s.content_types),
                    category=Category.SUICIDE_PROMOTION,
                    legal_basis=s.legal_basis,
                    requested_action=s.requested_action,
                    issued_at=issued_at,
                )
                payload = encode_single_object(event.to_avro(), REQUESTS_SUBJECT, store)
                # A producer with a reset clock: the broker still stamps a real arrival.
                arrival = _between(rng, s.start, s.end)
                outbox.post(_key(s.platform, event.content_id), payload, arrival, may_repeat=False)
            else:
                target = targets.pop()
                ids = (new_id("ac"), new_id("tw", 48))
                if kind == "timestamp_1970":  # would take the content down "in 1970"
                    at = _between(rng, *_YEAR_1970)
                    action = world.action(
                        target, ids, ActionType.REMOVED, at, names_request=False, jurisdiction=None
                    )
                    arrival = _between(rng, s.start, s.end)
                else:  # restricted_without_jurisdiction, naming the demand it would resolve
                    at = _between(rng, target.issued_at + _GAP, calibration_instant)
                    action = world.action(
                        target,
                        ids,
                        ActionType.RESTRICTED,
                        at,
                        names_request=True,
                        jurisdiction=None,
                    )
                    arrival = at + delivery.lag(rng)
                payload = encode_single_object(action.to_avro(), ACTIONS_SUBJECT, store)
                outbox.post(_key(s.platform, target.content_id), payload, arrival, may_repeat=False)
            posted += 1
    return posted


def _write_container(
    path: Path, messages: Iterable[RawMessage], store: SchemaStore, sync_marker: bytes
) -> int:
    """Write raw messages like `connectors.avro_files.write_raw_messages`, but with a fixed
    sync marker (that function lets fastavro draw a random one, which would make every run's
    bytes differ)."""
    records = [m.to_record() for m in messages]
    with path.open("wb") as out:
        avro_writer(
            out,
            store.latest(RAW_MESSAGE_SUBJECT).schema,
            records,
            codec=CODEC,
            sync_marker=sync_marker,
            # Every record comes from a RawMessage built here; fastavro's validator would
            # double the cost of writing (it renders the schema for each union it tries).
            validator=False,
            strict_allow_default=True,
        )
    return len(records)


# --------------------------------------------------------------------------------------


def generate(name: str, out_dir: Path, seed: int = 2021) -> GeneratedScenario:
    """Write the scenario `name`'s two Avro files of raw messages into `out_dir`.

    In: a scenario name from SCENARIOS, an output directory (created if missing), a seed.
    Out: the files' paths, counts of what they hold, and the published figures recomputed
    from the written well-formed events. Raises CalibrationError if a figure is missed.
    """
    scenario = load_scenario(name)
    params = _Params.parse(scenario.raw, str(scenario.path))
    rng = random.Random(seed)
    new_id = _IdMaker(rng)
    policy = SlaPolicy.load()
    store = SchemaStore.load()

    plans = _plan_demands(params, rng, new_id)
    _add_episodes(plans, params, rng, new_id)
    world = _World(params.setting, _request_names(plans))
    _apply_slowdowns(plans, params.slowdowns, rng)
    book = _Book(plans, world, policy)
    adjusted = _calibrate(book, scenario.figures, params, rng)
    for cleanup in params.cleanups:
        _clean_up(book, cleanup, params.setting.end, rng)

    requests, actions = book.events()
    checks = evaluate_figures(scenario.figures, requests, actions, policy)
    missed = [c for c in checks if not c.ok]
    if missed:
        raise CalibrationError(
            "; ".join(
                f"{c.figure.id}: computed {c.computed}, published {c.figure.comparison} "
                f"{c.figure.value}"
                for c in missed
            )
        )

    delivery = params.delivery
    request_box = _Outbox(REQUESTS_TOPIC, delivery, rng)
    action_box = _Outbox(ACTIONS_TOPIC, delivery, rng)
    platform = params.setting.platform
    for request in requests:
        payload = _encode_request(request, store, rng, delivery.v1_share)
        arrival = request.event_time + delivery.lag(rng)
        request_box.post(_key(platform, request.content_id), payload, arrival, may_repeat=True)
    for action in actions:
        payload = encode_single_object(action.to_avro(), ACTIONS_SUBJECT, store)
        arrival = action.event_time + delivery.lag(rng)
        action_box.post(_key(platform, action.content_id), payload, arrival, may_repeat=True)
    duplicates = request_box.duplicates + action_box.duplicates

    instant = min((f.as_of for f in scenario.figures), default=params.setting.end)
    targets = [
        p
        for p in plans
        if p.plain
        and p.decline_at is None
        and p.withdraw_at is None
        and p.issued_at + _GAP < instant
        and book.main_status(p, instant) in UNRESOLVED
    ]
    wanted = sum(
        params.malformed.get(ACTIONS_TOPIC, {}).get(kind, 0)
        for kind in ("timestamp_1970", "restricted_without_jurisdiction")
    )
    if len(targets) < wanted:
        raise CalibrationError(
            f"{len(targets)} unresolved demands to aim bad events at, {wanted} wanted"
        )
    targets = rng.sample(targets, wanted)
    malformed = 0
    for box, valid in ((request_box, requests), (action_box, actions)):
        malformed += _post_malformed(
            box,
            params.malformed.get(box.topic, {}),
            valid,
            targets,
            world,
            instant,
            store,
            rng,
            new_id,
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for box, file_name in ((request_box, REQUESTS_FILE), (action_box, ACTIONS_FILE)):
        path = out_dir / file_name
        sync_marker = random.Random(f"{name}/{seed}/{box.topic}").randbytes(16)
        _write_container(path, box.ordered(), store, sync_marker)
        paths[box.topic] = path
    return GeneratedScenario(
        scenario=name,
        seed=seed,
        requests_path=paths[REQUESTS_TOPIC],
        actions_path=paths[ACTIONS_TOPIC],
        valid_requests=len(requests),
        valid_actions=len(actions),
        duplicates=duplicates,
        malformed=malformed,
        adjusted=adjusted,
        checks=checks,
    )

"""Generation parameters: the scenario file's tables other than figures and context.

In: `Scenario.raw` (the parsed TOML) and the file name for error messages. Out: `Params`,
checked once (ValueError naming the file and table when something is off), which the
planning, calibration and delivery steps read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pipelines.model import ActionType, AuthorityKind, Category
from pipelines.scenarios.draws import hours, log_uniform
from pipelines.scenarios.scenario_file import parse_time

REQUESTS_TOPIC = "removal.requests"
ACTIONS_TOPIC = "removal.actions"

# The answers that take content down (what [categories.*] actions may name).
_COVERING = (
    ActionType.REMOVED,
    ActionType.RESTRICTED,
    ActionType.ACCOUNT_SUSPENDED,
    ActionType.CONTENT_NOT_FOUND,
)

# The malformed messages a scenario may ask for, by topic (in the order they are made).
MALFORMED_KINDS = {
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

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Setting:
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
class Period:
    start: datetime
    end: datetime
    requests: int
    mix: tuple[tuple[Category, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Delay:
    """Hours to an answer: lognormal(median, sigma), or with `tail_share` log-uniform tail."""

    median_hours: float
    sigma: float
    tail_share: float
    tail_hours: tuple[float, float]

    def draw(self, rng: random.Random) -> timedelta:
        if rng.random() < self.tail_share:
            return self.tail(rng)
        return hours(self.median_hours * math.exp(self.sigma * rng.gauss(0.0, 1.0)))

    def tail(self, rng: random.Random) -> timedelta:
        return hours(log_uniform(rng, *self.tail_hours))


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the platform answers demands of one category (see the scenario file)."""

    decline: float
    cover_after_decline: float
    ignore: float
    withdraw: float
    delay: Delay
    actions: tuple[tuple[ActionType, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Episodes:
    before: datetime
    repeat_demand: int
    already_removed: int
    already_removed_after_days: tuple[float, float]
    reinstated: int
    reinstated_before: datetime
    reinstated_after_days: tuple[float, float]
    removed_again_after_days: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    keep: float


@dataclass(frozen=True, slots=True)
class Cleanup:
    backlog_as_of: datetime
    start: datetime
    until: datetime
    backlog_removed: int
    later_share: float


@dataclass(frozen=True, slots=True)
class Delivery:
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
            return hours(24 * rng.uniform(*self.days_range))
        if u < self.days_share + self.hours_share:
            return hours(rng.uniform(*self.hours_range))
        seconds = self.lag_median_seconds * math.exp(self.lag_sigma * rng.gauss(0.0, 1.0))
        return max(timedelta(milliseconds=1), timedelta(milliseconds=round(seconds * 1000)))


@dataclass(frozen=True, slots=True)
class Params:
    setting: Setting
    periods: tuple[Period, ...]
    behaviours: Mapping[str, Behaviour]
    withdraw_after_hours: tuple[float, float]
    episodes: Episodes
    slowdowns: tuple[Window, ...]
    cleanups: tuple[Cleanup, ...]
    delivery: Delivery
    malformed: Mapping[str, Mapping[str, int]]

    def behaviour(self, category: Category) -> Behaviour:
        return self.behaviours.get(category.value) or self.behaviours["DEFAULT"]

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Params:
        s = raw["scenario"]
        setting = Setting(
            start=parse_time(s, "start", where),
            end=parse_time(s, "end", where),
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
            Period(
                parse_time(p, "start", where),
                parse_time(p, "end", where),
                int(p["requests"]),
                mixes[p["mix"]],
            )
            for p in raw["period"]
        )
        delays = {
            name: Delay(
                float(d["median_hours"]),
                float(d["sigma"]),
                float(d["tail_share"]),
                (float(d["tail_min_hours"]), float(d["tail_max_hours"])),
            )
            for name, d in raw["delays"].items()
        }
        behaviours = {
            name: Behaviour(
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
        episodes = Episodes(
            before=parse_time(e, "before", where),
            repeat_demand=int(e["repeat_demand"]),
            already_removed=int(e["already_removed"]),
            already_removed_after_days=_pair(e, "already_removed_after_days"),
            reinstated=int(e["reinstated"]),
            reinstated_before=parse_time(e, "reinstated_before", where),
            reinstated_after_days=_pair(e, "reinstated_after_days"),
            removed_again_after_days=_pair(e, "removed_again_after_days"),
        )
        slowdowns = tuple(
            Window(parse_time(w, "start", where), parse_time(w, "end", where), float(w["keep"]))
            for w in raw.get("slowdown", [])
        )
        cleanups = tuple(
            Cleanup(
                backlog_as_of=parse_time(c, "backlog_as_of", where),
                start=parse_time(c, "start", where),
                until=parse_time(c, "until", where),
                backlog_removed=int(c["backlog_removed"]),
                later_share=float(c["later_share"]),
            )
            for c in raw.get("cleanup", [])
        )
        for c in cleanups:
            if not c.backlog_as_of < c.start < c.until <= setting.end:
                raise ValueError(f"{where}: [[cleanup]] needs backlog_as_of < start < until <= end")
        d = raw["delivery"]
        delivery = Delivery(
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
            unknown = set(counts) - set(MALFORMED_KINDS[topic])
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


def _pair(raw: Mapping[str, Any], key: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in raw[key])
    if not 0 <= lo <= hi:
        raise ValueError(f"{key} must be [low, high] with 0 <= low <= high")
    return lo, hi

"""Alert evaluation: a pure function of the daily figures, the rules and each track's state.

Days are midnights UTC of event time (the grain of `backlog_daily`), as `date`s. For every
rule and every label set of its `by`, each evaluated day's figures either meet the rule's
condition or not; a track (rule + label set) starts firing once the condition has held on
`for_days` consecutive days and resolves once it has failed on `keep_firing_for_days`
consecutive days. One episode per track at a time: no storm while it holds.

    series = {("SUICIDE_PROMOTION", "twitter", "Roskomnadzor"): Figures(...)}
    result = evaluate(rules, series, tracks={}, days=[date(2021, 3, 4)], history_start=...)
    result.transitions[0] == Transition("fired", "BacklogSpike", {...}, date(2021, 3, 4), ...)

The caller (connectors/duckdb_alerts.py) reads the figures from DuckDB, keeps the tracks,
and records the transitions with their notifications.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, Protocol

from pipelines.alert_rules import LABELS, AlertRule, RuleKind

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
ONE_DAY = timedelta(days=1)


@dataclass
class Figures:
    """One finest-grain series (category, platform, authority) by day. `backlog`: (unresolved,
    overdue) as of the midnight, only on days it changed (it holds steady in between, and is
    0 before its first day); `deadlines`: (due, breached) of the deadlines that fell due in
    the day before the midnight."""

    backlog: dict[date, tuple[int, int]] = field(default_factory=dict)
    deadlines: dict[date, tuple[int, int]] = field(default_factory=dict)
    # The last backlog before the first day of `backlog` that the caller read.
    carried: tuple[int, int] = (0, 0)

    def filled(self, days: Sequence[date]) -> list[tuple[int, int]]:
        """(unresolved, overdue) on each of `days` (ascending), steady between changes."""
        out, last = [], self.carried
        changes = sorted(self.backlog.items())
        i = 0
        for day in days:
            while i < len(changes) and changes[i][0] <= day:
                last = changes[i][1]
                i += 1
            out.append(last)
        return out


@dataclass(frozen=True)
class Episode:
    alert_id: str
    fired_on: date


@dataclass(frozen=True)
class Track:
    """A rule's state for one label set between evaluations."""

    holds_since: date | None = None
    clear_since: date | None = None
    episode: Episode | None = None


_IDLE = Track()


@dataclass(frozen=True)
class Transition:
    kind: Literal["fired", "resolved"]
    rule: str
    labels: Labels
    day: date
    alert_id: str
    evidence: Mapping[str, Any]
    summary: str


@dataclass
class Evaluation:
    transitions: list[Transition]
    tracks: dict[tuple[str, Labels], Track]


def labels_json(labels: Labels) -> str:
    return json.dumps(dict(labels), sort_keys=True)


def alert_id(rule: str, labels: Labels, fired_on: date) -> str:
    basis = f"{rule}\x00{labels_json(labels)}\x00{fired_on.isoformat()}"
    return f"{rule}-{hashlib.sha256(basis.encode()).hexdigest()[:16]}"


def day_range(first: date, last: date) -> list[date]:
    return [first + ONE_DAY * i for i in range((last - first).days + 1)]


def evaluate(
    rules: Sequence[AlertRule],
    series: Mapping[tuple[str, str, str], Figures],
    tracks: Mapping[tuple[str, Labels], Track],
    days: Sequence[date],
    history_start: date,
) -> Evaluation:
    """Step every rule's tracks through `days` (ascending, consecutive). `series` must cover
    each rule's lookback before the first day. Returns the transitions in day order."""
    out_tracks = dict(tracks)
    transitions: list[Transition] = []
    if not days:
        return Evaluation(transitions, out_tracks)
    for rule in rules:
        start = days[0] - ONE_DAY * rule.lookback_days
        span = day_range(start, days[-1])
        first = rule.lookback_days  # the index of days[0] in span
        for labels, totals in _grouped(rule, series, span).items():
            key = (rule.name, labels)
            track = out_tracks.get(key, Track())
            signal = _signal(rule, totals, span, history_start)
            for i in range(first, len(span)):
                track, moved = _step(rule, labels, track, span[i], signal, i)
                if moved:
                    transitions.append(moved)
            out_tracks[key] = track
    transitions.sort(key=lambda t: (t.day, t.kind == "fired", t.rule, t.labels))
    return Evaluation(transitions, out_tracks)


@dataclass
class _Totals:
    unresolved: list[int]
    overdue: list[int]
    due: list[int]
    breached: list[int]


def _grouped(
    rule: AlertRule, series: Mapping[tuple[str, str, str], Figures], span: Sequence[date]
) -> dict[Labels, _Totals]:
    """Sum the finest series into the rule's label sets, day by day over `span`."""
    groups: dict[Labels, _Totals] = {}
    n = len(span)
    index = {day: i for i, day in enumerate(span)}
    for key, figures in sorted(series.items()):
        named = dict(zip(LABELS, key, strict=True))
        labels = tuple((name, named[name]) for name in sorted(rule.by))
        totals = groups.setdefault(labels, _Totals([0] * n, [0] * n, [0] * n, [0] * n))
        for i, (unresolved, overdue) in enumerate(figures.filled(span)):
            totals.unresolved[i] += unresolved
            totals.overdue[i] += overdue
        for day, (due, breached) in figures.deadlines.items():
            if (at := index.get(day)) is not None:
                totals.due[at] += due
                totals.breached[at] += breached
    return groups


class _Signal(Protocol):
    """A rule's condition on one label set's totals, day by day (index into the span).
    `holds(i)` is what a track steps on; `evidence(i)` is asked for only when it moves."""

    def holds(self, i: int) -> bool | None: ...

    def evidence(self, i: int) -> dict[str, Any]: ...


def _signal(rule: AlertRule, t: _Totals, span: Sequence[date], history_start: date) -> _Signal:
    if rule.kind is RuleKind.OVERDUE:
        return _Overdue(rule, t)
    if rule.kind is RuleKind.BREACH_RATE:
        return _BreachRate(rule, t)
    return _Spike(rule, t.unresolved, span, history_start)


class _Overdue:
    def __init__(self, rule: AlertRule, t: _Totals) -> None:
        self.rule, self.t = rule, t

    def holds(self, i: int) -> bool:
        return self.t.overdue[i] >= self.rule.threshold

    def evidence(self, i: int) -> dict[str, Any]:
        return {
            "overdue": self.t.overdue[i],
            "unresolved": self.t.unresolved[i],
            "threshold": int(self.rule.threshold),
        }


class _BreachRate:
    """Deadlines due and breached over the window_days ending with the day."""

    def __init__(self, rule: AlertRule, t: _Totals) -> None:
        self.rule, self.w = rule, rule.window_days
        self.due, self.breached = _prefix(t.due), _prefix(t.breached)

    def _figures(self, i: int) -> tuple[int, int, float]:
        lo, hi = i - self.w + 1, i + 1
        due = self.due[hi] - self.due[lo]
        breached = self.breached[hi] - self.breached[lo]
        return due, breached, breached / due if due else 0.0

    def holds(self, i: int) -> bool | None:
        due, _, rate = self._figures(i)
        # Fewer than min_due deadlines make no rate to fire on; mostly missed, they do not
        # end an episode either (the track stays as it is); mostly met (or none), they do.
        holds = rate >= self.rule.threshold
        return None if holds and due < self.rule.min_due else holds

    def evidence(self, i: int) -> dict[str, Any]:
        due, breached, rate = self._figures(i)
        return {
            "due": due,
            "breached": breached,
            "rate": round(rate, 4),
            "window_days": self.w,
            "threshold": self.rule.threshold,
            "min_due": self.rule.min_due,
        }


class _Spike:
    """The backlog's growth over window_days against its size and against the growth of
    each window that ended in the baseline_days before this window began (on days the data
    covers): its mean and sample standard deviation, as `statistics.fmean` and
    `statistics.stdev` give them (exact sums, a correctly rounded square root), from prefix
    sums rather than a list per day."""

    def __init__(
        self, rule: AlertRule, u: Sequence[int], span: Sequence[date], history_start: date
    ) -> None:
        self.rule, self.u = rule, u
        self.w, self.b = rule.window_days, rule.baseline_days
        # growth[j] = u[j] - u[j - w]; a window counts in a baseline if it began on a day
        # the data covers: j - w >= covered, the first such index of the span.
        growth = [0] * self.w + [u[j] - u[j - self.w] for j in range(self.w, len(u))]
        self.g1 = _prefix(growth)
        self.g2 = _prefix([g * g for g in growth])
        self.covered = max(0, (history_start - span[0]).days)

    def _growth(self, i: int) -> tuple[int, int, float, bool]:
        rule, u, w = self.rule, self.u, self.w
        growth, base = u[i] - u[i - w], u[i - w]
        relative = growth / base if base else (math.inf if growth > 0 else 0.0)
        by_size = growth >= rule.min_growth and relative >= rule.min_relative_growth
        return growth, base, relative, by_size

    def _baseline(
        self, i: int, growth: int
    ) -> tuple[int, float | None, float | None, float | None]:
        """(days, mean, sd, z) of the baseline; None where it is too short to weigh."""
        rule, w = self.rule, self.w
        lo, hi = max(i - w - self.b + 1, self.covered + w), i - w + 1
        n = max(0, hi - lo)
        if rule.k_sigma <= 0 or n < rule.min_baseline_days:
            return n, None, None, None
        s1 = self.g1[hi] - self.g1[lo]
        mean = float(s1) / n  # statistics.fmean: the exact sum, rounded, over n
        sd = 0.0
        if n > 1:  # statistics.stdev: sqrt((n * sum(x^2) - sum(x)^2) / (n * (n - 1)))
            sd = _sqrt_of_fraction(n * (self.g2[hi] - self.g2[lo]) - s1 * s1, n * (n - 1))
        return n, mean, sd, (growth - mean) / max(sd, rule.sigma_floor)

    def holds(self, i: int) -> bool:
        growth, _, _, by_size = self._growth(i)
        if by_size:
            return True
        _, _, _, z = self._baseline(i, growth)
        return z is not None and z >= self.rule.k_sigma and growth >= self.rule.min_sigma_growth

    def evidence(self, i: int) -> dict[str, Any]:
        rule = self.rule
        growth, base, relative, by_size = self._growth(i)
        days, mean, sd, z = self._baseline(i, growth)
        by_sigma = z is not None and z >= rule.k_sigma and growth >= rule.min_sigma_growth
        return {
            "unresolved": self.u[i],
            "growth": growth,
            "window_days": self.w,
            "unresolved_at_window_start": base,
            "relative_growth": None if math.isinf(relative) else round(relative, 4),
            "baseline_days": days,
            "baseline_mean": None if mean is None else round(mean, 2),
            "baseline_sd": None if sd is None else round(sd, 2),
            "z": None if z is None else round(z, 2),
            "min_growth": rule.min_growth,
            "min_relative_growth": rule.min_relative_growth,
            "k_sigma": rule.k_sigma,
            "by": [name for name, holds in (("size", by_size), ("sigma", by_sigma)) if holds],
        }


def _prefix(values: Sequence[int]) -> list[int]:
    """out[k] = sum(values[:k])."""
    return [0, *itertools.accumulate(values)]


def _sqrt_of_fraction(n: int, m: int) -> float:
    """The square root of n/m (n >= 0, m > 0) as a float, correctly rounded: how
    `statistics.stdev` takes the root of its exact variance (round-to-odd on an integer
    square root with 2 * 53 + 3 bits, then one rounding to float)."""
    q = (n.bit_length() - m.bit_length() - _SQRT_BITS) // 2
    if q >= 0:
        a = math.isqrt(n // (m << 2 * q))
        return ((a | (a * a * (m << 2 * q) != n)) << q) / 1
    shifted = n << -2 * q
    a = math.isqrt(shifted // m)
    return (a | (a * a * m != shifted)) / (1 << -q)


_SQRT_BITS = 2 * sys.float_info.mant_dig + 3


def _step(
    rule: AlertRule, labels: Labels, track: Track, day: date, signal: _Signal, i: int
) -> tuple[Track, Transition | None]:
    """One day of a track: the track after it, and the transition it made, if any."""
    holds = signal.holds(i)
    if holds is None:
        return track, None
    if holds:
        since = track.holds_since or day
        if track.episode is None and (day - since).days + 1 >= rule.for_days:
            episode = Episode(alert_id(rule.name, labels, day), day)
            fired = {**signal.evidence(i), "condition_since": since.isoformat()}
            summary = render(rule, labels, fired)
            moved = Transition("fired", rule.name, labels, day, episode.alert_id, fired, summary)
            return Track(since, None, episode), moved
        if track.holds_since == since and track.clear_since is None:
            return track, None
        return Track(since, None, track.episode), None
    if track.episode is None:
        return _IDLE, None
    clear = track.clear_since or day
    if (day - clear).days + 1 >= rule.keep_firing_for_days:
        episode = track.episode
        resolved = {**signal.evidence(i), "firing_days": (day - episode.fired_on).days}
        summary = render(rule, labels, resolved)
        moved = Transition("resolved", rule.name, labels, day, episode.alert_id, resolved, summary)
        return _IDLE, moved
    if track.holds_since is None and track.clear_since == clear:
        return track, None
    return Track(None, clear, track.episode), None


def render(rule: AlertRule, labels: Labels, evidence: Mapping[str, Any]) -> str:
    """The rule's summary with the label values and the evidence's figures."""
    values: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in evidence.items()}
    if values.get("relative_growth") is math.nan and evidence.get("growth", 0) > 0:
        values["relative_growth"] = math.inf
    values.update(dict(labels))
    for name in LABELS:
        values.setdefault(name, "all")
    try:
        return rule.summary.format(**values)
    except (KeyError, ValueError, IndexError) as error:
        # A template naming a figure this kind has no: say so rather than drop the alert.
        figures = ", ".join(f"{k}={v}" for k, v in sorted(evidence.items()))
        return f"{rule.name} {labels_json(labels)}: {figures} (summary template: {error})"


def resolve_removed(
    tracks: Mapping[tuple[str, Labels], Track], rules: Iterable[AlertRule], day: date
) -> list[Transition]:
    """Episodes of rules no longer in the rules file: resolved, not left firing forever."""
    known = {rule.name for rule in rules}
    gone = []
    for (name, labels), track in sorted(tracks.items()):
        if name not in known and track.episode is not None:
            evidence = {"reason": "the rule was removed from the alert rules"}
            gone.append(
                Transition(
                    "resolved",
                    name,
                    labels,
                    day,
                    track.episode.alert_id,
                    evidence,
                    f"{name} {labels_json(labels)}: resolved, the rule was removed",
                )
            )
    return gone

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
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Literal

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
        for labels, totals in _grouped(rule, series, span).items():
            key = (rule.name, labels)
            track = out_tracks.get(key, Track())
            for i, day in enumerate(span):
                if day < days[0]:
                    continue
                holds, evidence = _condition(rule, totals, i, span, history_start)
                track, moved = _step(rule, labels, track, day, holds, evidence)
                transitions.extend(moved)
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
    for key, figures in sorted(series.items()):
        named = dict(zip(LABELS, key, strict=True))
        labels = tuple((name, named[name]) for name in sorted(rule.by))
        totals = groups.setdefault(labels, _Totals([0] * n, [0] * n, [0] * n, [0] * n))
        for i, (unresolved, overdue) in enumerate(figures.filled(span)):
            totals.unresolved[i] += unresolved
            totals.overdue[i] += overdue
        for i, day in enumerate(span):
            due, breached = figures.deadlines.get(day, (0, 0))
            totals.due[i] += due
            totals.breached[i] += breached
    return groups


def _condition(
    rule: AlertRule, t: _Totals, i: int, span: Sequence[date], history_start: date
) -> tuple[bool | None, dict[str, Any]]:
    if rule.kind is RuleKind.OVERDUE:
        overdue = t.overdue[i]
        return overdue >= rule.threshold, {
            "overdue": overdue,
            "unresolved": t.unresolved[i],
            "threshold": int(rule.threshold),
        }
    w = rule.window_days
    if rule.kind is RuleKind.BREACH_RATE:
        due = sum(t.due[i - w + 1 : i + 1])
        breached = sum(t.breached[i - w + 1 : i + 1])
        rate = breached / due if due else 0.0
        # Fewer than min_due deadlines make no rate to fire on; mostly missed, they do not
        # end an episode either (the track stays as it is); mostly met (or none), they do.
        holds: bool | None = rate >= rule.threshold
        if due < rule.min_due and holds:
            holds = None
        return holds, {
            "due": due,
            "breached": breached,
            "rate": round(rate, 4),
            "window_days": w,
            "threshold": rule.threshold,
            "min_due": rule.min_due,
        }
    return _spike(rule, t.unresolved, i, span, history_start)


def _spike(
    rule: AlertRule, u: Sequence[int], i: int, span: Sequence[date], history_start: date
) -> tuple[bool, dict[str, Any]]:
    w, b = rule.window_days, rule.baseline_days
    growth, base = u[i] - u[i - w], u[i - w]
    relative = growth / base if base else (math.inf if growth > 0 else 0.0)
    by_size = growth >= rule.min_growth and relative >= rule.min_relative_growth
    # The baseline: the growth of each window that ended in the baseline_days before this
    # window began, on days the data covers.
    baseline = [
        u[j] - u[j - w] for j in range(i - w - b + 1, i - w + 1) if span[j - w] >= history_start
    ]
    mean = sd = z = None
    by_sigma = False
    if rule.k_sigma > 0 and len(baseline) >= rule.min_baseline_days:
        mean = statistics.fmean(baseline)
        sd = statistics.stdev(baseline) if len(baseline) > 1 else 0.0
        z = (growth - mean) / max(sd, rule.sigma_floor)
        by_sigma = z >= rule.k_sigma and growth >= rule.min_sigma_growth
    evidence: dict[str, Any] = {
        "unresolved": u[i],
        "growth": growth,
        "window_days": w,
        "unresolved_at_window_start": base,
        "relative_growth": None if math.isinf(relative) else round(relative, 4),
        "baseline_days": len(baseline),
        "baseline_mean": None if mean is None else round(mean, 2),
        "baseline_sd": None if sd is None else round(sd, 2),
        "z": None if z is None else round(z, 2),
        "min_growth": rule.min_growth,
        "min_relative_growth": rule.min_relative_growth,
        "k_sigma": rule.k_sigma,
        "by": [name for name, holds in (("size", by_size), ("sigma", by_sigma)) if holds],
    }
    return by_size or by_sigma, evidence


def _step(
    rule: AlertRule,
    labels: Labels,
    track: Track,
    day: date,
    holds: bool | None,
    evidence: dict[str, Any],
) -> tuple[Track, list[Transition]]:
    if holds is None:
        return track, []
    if holds:
        since = track.holds_since or day
        track = replace(track, holds_since=since, clear_since=None)
        if track.episode is None and (day - since).days + 1 >= rule.for_days:
            episode = Episode(alert_id(rule.name, labels, day), day)
            fired = {**evidence, "condition_since": since.isoformat()}
            return replace(track, episode=episode), [
                Transition(
                    "fired",
                    rule.name,
                    labels,
                    day,
                    episode.alert_id,
                    fired,
                    render(rule, labels, fired),
                )
            ]
        return track, []
    clear = track.clear_since or day
    track = replace(track, holds_since=None, clear_since=clear)
    if track.episode is not None and (day - clear).days + 1 >= rule.keep_firing_for_days:
        episode = track.episode
        resolved = {**evidence, "firing_days": (day - episode.fired_on).days}
        return Track(), [
            Transition(
                "resolved",
                rule.name,
                labels,
                day,
                episode.alert_id,
                resolved,
                render(rule, labels, resolved),
            )
        ]
    if track.episode is None:
        track = replace(track, clear_since=None)
    return track, []


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

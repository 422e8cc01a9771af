"""Alert evaluation against a naive reference written from the rules' definitions: each
day's condition from plain lists and the `statistics` module (baseline mean and sample
standard deviation), tracks stepped one day at a time. The evaluator keeps prefix sums and
asks for evidence only when a track moves; it must give the same transitions, evidence
and all, on random backlogs with surges, gaps and ties."""

from __future__ import annotations

import math
import statistics
from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.alert_rules import AlertRule, RuleKind
from pipelines.alerting import Figures, _sqrt_of_fraction, day_range, evaluate

FIRST = date(2024, 1, 1)
KEY = ("DRUGS", "p", "a")


def _spike_condition(
    rule: AlertRule, u: list[int], i: int, span: list[date], start: date
) -> tuple[bool, dict[str, Any]]:
    w, b = rule.window_days, rule.baseline_days
    growth, base = u[i] - u[i - w], u[i - w]
    relative = growth / base if base else (math.inf if growth > 0 else 0.0)
    by_size = growth >= rule.min_growth and relative >= rule.min_relative_growth
    baseline = [u[j] - u[j - w] for j in range(i - w - b + 1, i - w + 1) if span[j - w] >= start]
    mean = sd = z = None
    by_sigma = False
    if rule.k_sigma > 0 and len(baseline) >= rule.min_baseline_days:
        mean = statistics.fmean(baseline)
        sd = statistics.stdev(baseline) if len(baseline) > 1 else 0.0
        z = (growth - mean) / max(sd, rule.sigma_floor)
        by_sigma = z >= rule.k_sigma and growth >= rule.min_sigma_growth
    return by_size or by_sigma, {
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


def _rate_condition(
    rule: AlertRule, due: list[int], breached: list[int], i: int
) -> tuple[bool | None, dict[str, Any]]:
    w = rule.window_days
    d, b = sum(due[i - w + 1 : i + 1]), sum(breached[i - w + 1 : i + 1])
    rate = b / d if d else 0.0
    holds: bool | None = rate >= rule.threshold
    if d < rule.min_due and holds:
        holds = None
    evidence = {"due": d, "breached": b, "rate": round(rate, 4), "window_days": w}
    return holds, {**evidence, "threshold": rule.threshold, "min_due": rule.min_due}


def _reference(rule: AlertRule, figures: Figures, days: list[date], start: date) -> list[tuple]:
    """(kind, day, evidence) of every transition, a track stepped day by day."""
    span = day_range(days[0] - timedelta(days=rule.lookback_days), days[-1])
    u = [unresolved for unresolved, _ in figures.filled(span)]
    due = [figures.deadlines.get(d, (0, 0))[0] for d in span]
    breached = [figures.deadlines.get(d, (0, 0))[1] for d in span]
    holds_since = clear_since = fired_on = None
    out = []
    for i, day in enumerate(span):
        if day < days[0]:
            continue
        if rule.kind is RuleKind.BACKLOG_SPIKE:
            holds, evidence = _spike_condition(rule, u, i, span, start)
        else:
            holds, evidence = _rate_condition(rule, due, breached, i)
        if holds is None:
            continue
        if holds:
            holds_since, clear_since = holds_since or day, None
            if fired_on is None and (day - holds_since).days + 1 >= rule.for_days:
                fired_on = day
                out.append(("fired", day, {**evidence, "condition_since": holds_since.isoformat()}))
            continue
        holds_since, clear_since = None, clear_since or day
        if fired_on is None:
            clear_since = None
        elif (day - clear_since).days + 1 >= rule.keep_firing_for_days:
            out.append(("resolved", day, {**evidence, "firing_days": (day - fired_on).days}))
            fired_on = clear_since = None
    return out


def _rule(kind: RuleKind, **values: Any) -> AlertRule:
    return AlertRule(
        name=kind.name, kind=kind, severity="warning", by=("category",), summary="s", runbook="r",
        **values,
    )  # fmt: skip


spike_rules = st.builds(
    lambda w, b, mb, k, floor, growth, relative, fd, keep: _rule(
        RuleKind.BACKLOG_SPIKE,
        window_days=w,
        baseline_days=b,
        min_baseline_days=min(mb, b),
        k_sigma=k,
        sigma_floor=floor,
        min_sigma_growth=3,
        min_growth=growth,
        min_relative_growth=relative,
        for_days=fd,
        keep_firing_for_days=keep,
    ),
    st.integers(1, 5),
    st.integers(1, 12),
    st.integers(1, 12),
    st.sampled_from([0.0, 1.0, 2.5]),
    st.sampled_from([0.5, 1.0, 4.0]),
    st.sampled_from([0, 8, 1000]),
    st.sampled_from([0.0, 0.2]),
    st.integers(1, 3),
    st.integers(1, 3),
)
rate_rules = st.builds(
    lambda w, threshold, min_due, fd, keep: _rule(
        RuleKind.BREACH_RATE,
        window_days=w,
        threshold=threshold,
        min_due=min_due,
        for_days=fd,
        keep_firing_for_days=keep,
    ),
    st.integers(1, 5),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 3),
)
# Backlog changes: mostly small steps, sometimes a surge or a drop; gaps keep it steady.
steps = st.lists(
    st.one_of(st.integers(-3, 4), st.integers(-60, 90), st.none()), min_size=5, max_size=60
)
deadlines = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=5, max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(spike_rules, rate_rules),
    steps,
    deadlines,
    st.integers(0, 15),
    st.integers(0, 20),
    st.integers(0, 40),
)
def test_evaluation_equals_the_reference(
    rule: AlertRule,
    changes: list[int | None],
    dues: list[tuple[int, int]],
    start_offset: int,
    first_offset: int,
    length: int,
) -> None:
    backlog, level = {}, 50
    for i, change in enumerate(changes):
        if change is not None:
            level = max(0, level + change)
            backlog[FIRST + timedelta(days=i)] = (level, 0)
    due = {FIRST + timedelta(days=i): (d, min(b, d)) for i, (d, b) in enumerate(dues)}
    figures = Figures(backlog=backlog, deadlines=due, carried=(7, 0))
    start = FIRST + timedelta(days=start_offset)
    first = FIRST + timedelta(days=first_offset)
    days = day_range(first, first + timedelta(days=length))
    result = evaluate([rule], {KEY: figures}, {}, days, start)
    got = [(t.kind, t.day, dict(t.evidence)) for t in result.transitions]
    assert got == _reference(rule, figures, days, start)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-(10**12), 10**12) | st.integers(-5, 5), min_size=2, max_size=70))
def test_the_standard_deviation_is_statistics_stdev_to_the_last_bit(values: list[int]) -> None:
    n, s1, s2 = len(values), sum(values), sum(v * v for v in values)
    assert _sqrt_of_fraction(n * s2 - s1 * s1, n * (n - 1)) == statistics.stdev(values)

"""Random draws for the scenario generator, all from the caller's `random.Random`.

Times are drawn on whole milliseconds: events are written as Avro timestamp-millis, so
planning on milliseconds makes the decoded events exactly the planned ones.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


def pick(rng: random.Random, weighted: tuple[tuple[T, ...], tuple[float, ...]]) -> T:
    """One value of (values, cumulative weights), as `params` parses weight tables."""
    return rng.choices(weighted[0], cum_weights=weighted[1])[0]


def hours(count: float) -> timedelta:
    """`count` hours, rounded to whole milliseconds, at least one millisecond."""
    return max(timedelta(milliseconds=1), timedelta(milliseconds=round(count * 3_600_000)))


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    """A whole-millisecond instant in [lo, hi) (lo when the interval is empty)."""
    span = (hi - lo) // timedelta(milliseconds=1)
    return lo + timedelta(milliseconds=rng.randrange(span)) if span > 0 else lo

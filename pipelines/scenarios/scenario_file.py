"""The scenario file: published figures with their sources, and context notes.

In: a scenario name (a key of SCENARIOS) or a TOML file path. Out: a `Scenario` holding
the parsed figures and notes, and the file's raw tables, which `params.Params.parse` reads
for the generation parameters. `CalibrationError` is raised (by planning, calibration or
the final check) when generated events cannot reproduce the figures.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.model import Category

SCENARIO_DIR = Path(__file__).resolve().parent
# Every scenario file shipped next to this module, by name (the file's stem).
# Scenario names use dashes (`--scenario roskomnadzor-twitter-2021`); files use underscores.
SCENARIOS: dict[str, Path] = {
    p.stem.replace("_", "-"): p for p in sorted(SCENARIO_DIR.glob("*.toml"))
}

METRICS = ("unresolved", "requests_issued")
COMPARISONS = ("exactly", "more_than")
ALL_CATEGORIES = "ALL"


class UnknownScenario(ValueError):
    """A scenario name not in SCENARIOS; the message lists the known ones."""


class CalibrationError(RuntimeError):
    """The planned events do not reproduce a published figure."""


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
    """Parse the scenario file registered under `name` in SCENARIOS (UnknownScenario if
    it is not there)."""
    path = SCENARIOS.get(name)
    if path is None:
        raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
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
        ContextNote(parse_time(c, "as_of", where), str(c["what"]), str(c["source"]))
        for c in raw.get("context", [])
    )
    title = str(raw.get("scenario", {}).get("title", path.stem))
    return Scenario(path.stem, path, title, figures, context, raw)


def _parse_figure(raw: Mapping[str, Any], where: str) -> PublishedFigure:
    where = f"{where}: figure {raw.get('id')!r}"
    figure = PublishedFigure(
        id=str(raw["id"]),
        as_of=parse_time(raw, "as_of", where),
        metric=str(raw["metric"]),
        category=str(raw["category"]),
        comparison=str(raw["comparison"]),
        value=int(raw["value"]),
        source=str(raw["source"]),
        quote=str(raw["quote"]),
        since=parse_time(raw, "since", where) if "since" in raw else None,
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


def parse_time(raw: Mapping[str, Any], key: str, where: str) -> datetime:
    """`raw[key]` as a UTC datetime; ValueError naming `where` unless it has an offset."""
    value = raw[key]
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{where}: {key} must be an offset date-time, e.g. 2021-03-01T00:00:00Z")
    return value.astimezone(UTC)

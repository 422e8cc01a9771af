"""The demo: generate the seed scenario, audit it, and set the published figures beside the
figures the pipeline's SQL computes, through the same read-only path an auditor uses.

The scenario's published figures are read here, after the pipeline has run, only to
print them next to the computed ones: the pipeline itself never sees them.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb

from connectors.duckdb_reader import canned_queries, connect_auditor, run_sql
from connectors.duckdb_sink import LoadReport
from pipelines.scenarios.generator import PublishedFigure
from pipelines.settings import Settings


@dataclass(frozen=True)
class FigureCheck:
    """One published figure and what the pipeline computed for it."""

    as_of: datetime
    label: str
    published: str
    computed: int | None
    matches: bool
    command: str


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _cli() -> str:
    """How the user can call the CLI from here (the venv's script when not on PATH)."""
    script = Path(sys.executable).parent / "removal-audit"
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return "removal-audit"
    return str(relative) if script.exists() else "removal-audit"


def check_figure(con: Any, figure: PublishedFigure, database: Path) -> FigureCheck:
    """Compute `figure` with its canned query on the auditor connection `con`."""
    if figure.metric == "unresolved":
        query, column = "unresolved_by_category", "unresolved"
        params = {"as_of": _stamp(figure.as_of)}
    elif figure.metric == "requests_issued" and figure.since is not None:
        query, column = "requests_issued", "requests"
        params = {"since": _stamp(figure.since), "as_of": _stamp(figure.as_of)}
    else:
        raise ValueError(f"figure {figure.id}: cannot compute metric {figure.metric!r}")
    canned = canned_queries()[query]
    columns, rows = run_sql(con, canned.sql, canned.bind(params))
    by_category = {row[0]: row[columns.index(column)] for row in rows}
    computed = int(by_category.get(figure.category, 0))
    command = " ".join(
        [_cli(), "sql", "--db", shlex.quote(str(database)), "--canned", query]
        + [f"--param {k}={v}" for k, v in params.items()]
    )
    label = f"{figure.metric.replace('_', ' ')}, {figure.category.lower().replace('_', ' ')}"
    if figure.since is not None:
        label += f" since {figure.since.date().isoformat()}"
    exact = figure.comparison == "exactly"
    published = f"{figure.value:,}" if exact else f"more than {figure.value:,}"
    return FigureCheck(figure.as_of, label, published, computed, figure.holds(computed), command)


def print_account(report: LoadReport, out: TextIO) -> None:
    out.write(
        f"record account: {report.records_in:,} in = {report.landed:,} landed "
        f"+ {report.duplicates:,} duplicate deliveries + {report.quarantined:,} quarantined "
        f"({'balanced' if report.balanced else 'NOT BALANCED'})\n"
    )
    out.write(f"data-quality gate: {report.validation}\n")
    out.write(f"{report.alerts}\n")
    if report.replayed:
        out.write("same inputs as an earlier load: tables rewritten identically\n")
    out.write(f"database: {report.database}\n")


def print_orphans(con: duckdb.DuckDBPyConnection, database: Path, out: TextIO) -> None:
    """Actions on content no request targets: kept (not quarantined), reported when still
    unmatched after the canned query's grace period."""
    _, rows = run_sql(con, "SELECT count(*) FROM orphan_actions")
    query = canned_queries()["unmatched_orphan_actions"]
    _, unmatched = run_sql(con, query.sql, query.bind({}))
    command = " ".join([_cli(), "sql", "--db", shlex.quote(str(database)), "--canned", query.name])
    out.write(
        f"orphan actions (no request on their content): {rows[0][0]:,}, "
        f"{len(unmatched):,} unmatched after {query.params['grace_days']} days: {command}\n"
    )


def print_alerts(con: duckdb.DuckDBPyConnection, database: Path, out: TextIO) -> None:
    """The backlog spikes the alert rules found, at the event time they fired."""
    query = canned_queries()["alert_episodes"]
    columns, rows = run_sql(con, query.sql, {"rule": "BacklogSpike"})
    command = " ".join([_cli(), "sql", "--db", shlex.quote(str(database)), "--canned", query.name])
    out.write(f"backlog spikes (event time; every alert episode: {command}):\n")
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        until = "firing" if r["resolved_at"] is None else f"to {r['resolved_at']:%Y-%m-%d}"
        out.write(f"  {r['fired_at']:%Y-%m-%d} {until}: {r['summary']}\n")


def print_figures(checks: list[FigureCheck], out: TextIO) -> None:
    headers = ("as of", "figure", "published", "computed", "match")
    table = [
        (
            c.as_of.date().isoformat(),
            c.label,
            c.published,
            f"{c.computed:,}",
            "yes" if c.matches else "NO",
        )
        for c in checks
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in table:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def run_demo(settings: Settings, *, scenario: str, seed: int, out: TextIO) -> int:
    from pipelines.batch import run_batch
    from pipelines.scenarios.generator import generate, load_scenario

    started = time.perf_counter()
    generated = generate(scenario, settings.data_dir, seed=seed)
    out.write(
        f"1. generated scenario {scenario!r} (seed {seed}) in {generated.requests_path.parent}: "
        f"{generated.valid_requests:,} request events, {generated.valid_actions:,} action events, "
        f"{generated.duplicates:,} repeated deliveries, "
        f"{generated.malformed:,} malformed messages\n"
    )
    report = run_batch([generated.requests_path, generated.actions_path], settings)
    out.write(
        "2. ran the pipeline: Avro files -> Beam (decode, dedupe, match, backlog, SLA) -> DuckDB\n"
    )
    print_account(report, out)

    figures = load_scenario(scenario).figures
    con = connect_auditor(settings.database)
    try:
        checks = [check_figure(con, f, settings.database) for f in figures]
        print_orphans(con, settings.database, out)
        print_alerts(con, settings.database, out)
    finally:
        con.close()
    out.write("\n3. published figures vs the pipeline's SQL (read-only auditor connection):\n\n")
    print_figures(checks, out)
    out.write("\nreproduce the figures (each command prints every category as of its date):\n")
    for command in dict.fromkeys(c.command for c in checks):
        out.write(f"  {command}\n")
    out.write(
        "\nmore: --canned sla_breach_rate_by_category_month | time_to_action_percentiles | "
        "oldest_open_requests --param as_of=...\n"
    )
    out.write(
        f"\nexplore: {_cli()} sql --db {shlex.quote(str(settings.database))}   "
        f"(.queries lists the canned audits)\n"
    )
    ok = all(c.matches for c in checks) and report.balanced
    out.write(f"\ndemo {'passed' if ok else 'FAILED'} in {time.perf_counter() - started:.0f} s\n")
    return 0 if ok else 1

"""The data-quality gate between landing and the auditors.

Every landed batch is validated with the suites of `expectations/` before auditors can see
it. A batch load (`pipelines.batch`) validates its rows inside its transaction: a failure
rolls the load back (the previous tables stay), records the result and holds the run. The
streaming writer validates the batches landed since its last snapshot before publishing
the next one: a failure records the result, holds them, and the snapshot stays at the last
good state while landing goes on. Either way the hold raises a `BatchHeld` alert (table
`alerts`) that stays firing until a validation of every row passes or an operator accepts
the batches (`removal-audit validate`).

While anything is held the gate validates every row, not just the new batches, so a fix
that lands later (or a corrected suite) is what releases the hold.

Example:
    gate = QualityGate.from_settings(settings)
    publishable = gate.check_stream(con, ["3b1f..."], {"requests": ["R1"]})
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from connectors import duckdb_quality as dq
from pipelines.quality import Suite, SuiteResult, SuiteRunner, load_suites, suite_parameters
from pipelines.settings import Settings

log = logging.getLogger(__name__)

# Suites whose rows a stream scope names by key; the others always check every row.
SCOPED_BY = {
    "request_events": "request_events",
    "action_events": "action_events",
    "requests": "requests",
    "lifecycle_transitions": "requests",
}


@dataclass(frozen=True)
class GateOutcome:
    validation_id: str
    scope: str  # "batch" | "all"
    results: tuple[SuiteResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failed_suites(self) -> list[str]:
        return [r.suite for r in self.results if not r.success]

    def evidence(self) -> dict[str, Any]:
        return {
            "validation_id": self.validation_id,
            "failed": {
                r.suite: [dataclasses.replace(f, sample=f.sample[:3]).as_json() for f in r.failures]
                for r in self.results
                if not r.success
            },
        }

    def summary(self) -> str:
        """One line. Example: "5 suites, 35 expectations: passed (validation 9f2c...)"."""
        expectations = sum(r.evaluated for r in self.results)
        verdict = "passed" if self.passed else f"FAILED ({', '.join(self.failed_suites)})"
        return (
            f"{len(self.results)} suites, {expectations} expectations: {verdict} "
            f"(validation {self.validation_id})"
        )

    def describe(self) -> str:
        lines = []
        for r in self.results:
            mark = "ok  " if r.success else "FAIL"
            lines.append(f"{mark} {r.suite}: {r.rows} rows, {r.evaluated} expectations")
            for f in r.failures:
                what = f.error or f"{f.unexpected} unexpected"
                lines.append(f"       {f.expectation}({', '.join(f.columns)}): {what}; {f.note}")
                if f.sample:
                    lines.append(f"       e.g. {f.sample[0]}")
        return "\n".join(lines)


class QualityGate:
    def __init__(self, runner: SuiteRunner, alert_sinks: Sequence[str] = ()) -> None:
        self.runner = runner
        # Where the BatchHeld alert is notified (connectors/alert_sinks.py), besides DuckDB.
        self.alert_sinks = tuple(alert_sinks)
        # Stream batches whose first check failed, checked again before they are held.
        self._suspect: tuple[list[str], dict[str, list[str]]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, docs_dir: Path | None = None) -> QualityGate:
        return cls(
            SuiteRunner(
                load_suites(),
                suite_parameters(settings.max_clock_skew_seconds, settings.schemas_dir),
                docs_dir,
            )
        )

    def evaluate(
        self, con: duckdb.DuckDBPyConnection, scope: Mapping[str, Sequence[str]] | None
    ) -> GateOutcome:
        """Run the suites on the scope's rows (None: every row); a suite whose table the
        scope does not name is skipped, except backlog_daily, checked whole."""
        dq.set_scope(con, scope)
        results = []
        for suite in self._suites_for(scope):
            frame = dq.fetch_frame(con, suite.query, suite.columns)
            results.append(self.runner.run(suite, frame))
        return GateOutcome(
            uuid.uuid4().hex[:16], "all" if scope is None else "batch", tuple(results)
        )

    def _suites_for(self, scope: Mapping[str, Sequence[str]] | None) -> list[Suite]:
        if scope is None:
            return list(self.runner.suites)
        return [
            s for s in self.runner.suites if s.name not in SCOPED_BY or scope.get(SCOPED_BY[s.name])
        ]

    def record(
        self,
        con: duckdb.DuckDBPyConnection,
        outcome: GateOutcome,
        *,
        path: str,
        batch_ids: Sequence[str],
        hold: bool,
    ) -> None:
        """Store the outcome; hold the batches when `hold`; a pass over every row releases
        every open hold."""
        load = batch_ids[0] if path == "batch" else None  # a batch load's one batch: itself
        dq.record_validation(
            con,
            validation_id=outcome.validation_id,
            path=path,
            scope=outcome.scope,
            batch_ids=batch_ids,
            results=outcome.results,
        )
        if hold:
            dq.hold(
                con,
                batch_ids=batch_ids,
                path=path,
                validation_id=outcome.validation_id,
                failed_suites=outcome.failed_suites,
                evidence=outcome.evidence(),
                sinks=self.alert_sinks,
                run_id=load,
            )
        elif outcome.passed and outcome.scope == "all":
            released = dq.release_holds(con, outcome.validation_id, load)
            if released:
                log.warning(
                    "validation %s passed: released %d held batch(es)",
                    outcome.validation_id,
                    released,
                )

    def check_stream(
        self,
        con: duckdb.DuckDBPyConnection,
        batch_ids: Sequence[str],
        scope: Mapping[str, Sequence[str]],
    ) -> bool:
        """The streaming writer's gate: validate the batches landed since the last snapshot
        (every row while anything is held), record it in one transaction, and say whether
        the snapshot may be published.

        A first failure holds nothing yet: rows of one history travel by different paths
        (an event row directly, its request's release through the lifecycle stage) and can
        land in consecutive micro-batches, so a reference may be missing for a moment. The
        snapshot waits, and the next check covers those batches again with the new ones;
        a failure that persists holds them all and raises the alert."""
        held = dq.open_holds(con)
        ids, keys = list(batch_ids), {t: list(k) for t, k in scope.items()}
        if self._suspect is not None:
            suspect_ids, suspect_keys = self._suspect
            ids = suspect_ids + ids
            for table, table_keys in suspect_keys.items():
                keys[table] = table_keys + keys.get(table, [])
        outcome = self.evaluate(con, None if held else keys)
        defer = not outcome.passed and not held and self._suspect is None
        con.begin()
        try:
            self.record(
                con, outcome, path="stream", batch_ids=ids, hold=not (outcome.passed or defer)
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self._suspect = (ids, keys) if defer else None
        if defer:
            log.warning(
                "data-quality gate: %d batch(es) failed (validation %s), snapshot not published; "
                "checked again with the next batches before they are held\n%s",
                len(ids),
                outcome.validation_id,
                outcome.describe(),
            )
        elif not outcome.passed:
            log.error(
                "data-quality gate: %d batch(es) held, snapshot not published (validation %s)\n%s",
                len(ids),
                outcome.validation_id,
                outcome.describe(),
            )
        return outcome.passed

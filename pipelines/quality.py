"""Great Expectations suites over landed rows: load them from `expectations/`, run them on
DataFrames, build Data Docs.

A suite is two files: `expectations/<name>.json` (the Great Expectations suite: expectations,
each with a note saying why) and `expectations/<name>.sql` (the query that selects the rows
of the batch under validation, with derived columns the expectations check, e.g. a request's
deadline recomputed from the policy table). The closed sets and bounds the suites name as
`{"$PARAMETER": ...}` come from the code (`suite_parameters`), so an enum has one source.

Great Expectations is imported only when a suite first runs (it takes seconds to import),
and it validates pandas DataFrames fetched from DuckDB: its SQL datasource gives wrong
results on DuckDB.

Example:
    runner = SuiteRunner(load_suites(), suite_parameters(max_clock_skew_seconds=300))
    result = runner.run(suite, frame)   # SuiteResult(suite="requests", rows=120, failed=0, ...)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, SUBJECTS
from pipelines.model import (
    ActionType,
    AuthorityKind,
    Category,
    Disposition,
    RequestEventType,
    Transition,
)
from pipelines.resources import expectations_dir

log = logging.getLogger(__name__)

# Failing rows reported per failed expectation (their keys), for review.
SAMPLE_ROWS = 20
# The kwargs by which an expectation names a column.
COLUMN_KWARGS = ("column", "column_A", "column_B")


@dataclass(frozen=True)
class Suite:
    """One suite: its Great Expectations definition, the query selecting its batch, and the
    columns that identify a row (reported for failing rows)."""

    name: str
    definition: Mapping[str, Any]
    query: str
    key_columns: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The columns its expectations and its key name, the only ones a validation needs
        fetched; None (every column) when an expectation names no column (a table-level
        one). Example: ("request_id", "category", "sla_seconds", ...)."""
        named = list(self.key_columns)
        for spec in self.definition["expectations"]:
            kwargs = spec.get("kwargs", {})
            columns = [kwargs[k] for k in COLUMN_KWARGS if k in kwargs]
            columns += list(kwargs.get("column_list", ()))
            if not columns:
                return None
            named += columns
        return tuple(dict.fromkeys(str(c) for c in named))


@dataclass(frozen=True)
class Failure:
    """One failed expectation. Example: Failure(expectation="expect_column_values_to_be_in_set",
    columns=("policy_consistent",), unexpected=3, note="The deadline comes from ...",
    sample=({"request_id": "RKN-2017-000001", "policy_consistent": False},), error=None)"""

    expectation: str
    columns: tuple[str, ...]
    unexpected: int | None
    note: str
    sample: tuple[Mapping[str, Any], ...]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "columns": list(self.columns),
            "unexpected": self.unexpected,
            "note": self.note,
            "sample": [dict(s) for s in self.sample],
            "error": self.error,
        }


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    rows: int
    evaluated: int
    failures: tuple[Failure, ...] = field(default=())

    @property
    def success(self) -> bool:
        return not self.failures


def load_suites(directory: Path | None = None) -> tuple[Suite, ...]:
    """Every `<name>.json` + `<name>.sql` pair of the directory, by name."""
    root = expectations_dir() if directory is None else directory
    suites = []
    for path in sorted(root.glob("*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        query = path.with_suffix(".sql")
        if not query.is_file():
            raise FileNotFoundError(f"suite {path.name} has no query {query.name}")
        if definition.get("name") != path.stem:
            raise ValueError(f"{path.name}: suite name {definition.get('name')!r} != file name")
        keys = tuple(definition.get("meta", {}).get("key_columns", ()))
        suites.append(Suite(path.stem, definition, query.read_text(encoding="utf-8"), keys))
    if not suites:
        raise FileNotFoundError(f"no suites in {root}")
    return tuple(suites)


def suite_parameters(
    max_clock_skew_seconds: int, schemas_dir: Path | None = None
) -> dict[str, Any]:
    """The values suites refer to as {"$PARAMETER": name}; the schema versions are those of
    the catalog in `schemas_dir` (None: the packaged one), which intake records."""
    store = SchemaStore.load(schemas_dir)

    def versions(topic: str) -> list[int]:
        return [v.version for v in store.versions(SUBJECTS[topic])]

    return {
        "categories": [c.value for c in Category],
        "authority_kinds": [k.value for k in AuthorityKind],
        "request_event_types": [t.value for t in RequestEventType],
        "action_types": [a.value for a in ActionType],
        "transitions": [t.value for t in Transition],
        "dispositions": [d.value for d in Disposition],
        "request_schema_versions": versions(REQUESTS_TOPIC),
        "action_schema_versions": versions(ACTIONS_TOPIC),
        "min_acted_minus_issued_s": -max_clock_skew_seconds,
    }


class SuiteRunner:
    """Runs suites on DataFrames in one ephemeral Great Expectations context (built on first
    use; dropped when pickled, so a runner can travel to a Beam worker)."""

    def __init__(
        self, suites: Sequence[Suite], parameters: Mapping[str, Any], docs_dir: Path | None = None
    ) -> None:
        self.suites = tuple(suites)
        self.parameters = dict(parameters)
        self.docs_dir = docs_dir
        self._context: Any = None
        self._definitions: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_context"], state["_definitions"] = None, {}
        return state

    def warm_up(self) -> None:
        """Import Great Expectations now (seconds), not at the first validation."""
        _import_great_expectations()

    def _prepare(self) -> None:
        if self._context is not None:
            return
        gx = _import_great_expectations()
        from great_expectations.checkpoint.actions import UpdateDataDocsAction, ValidationAction
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        actions: list[ValidationAction] = []
        if self.docs_dir is not None:
            context.add_data_docs_site(
                site_name="removal-audit",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(self.docs_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            actions.append(UpdateDataDocsAction(name="docs", site_names=["removal-audit"]))
        source = context.data_sources.add_pandas("removal-audit")
        for suite in self.suites:
            expectations = [
                ExpectationConfiguration(**spec).to_domain_obj()
                for spec in suite.definition["expectations"]
            ]
            gx_suite = context.suites.add(
                gx.ExpectationSuite(
                    name=suite.name,
                    expectations=expectations,
                    meta=dict(suite.definition.get("meta", {})),
                )
            )
            batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe(
                "batch"
            )
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
            )
            self._definitions[suite.name] = context.checkpoints.add(
                gx.Checkpoint(
                    name=suite.name,
                    validation_definitions=[definition],
                    actions=actions,
                    result_format=self._result_format(suite),
                )
            )
        self._context = context

    @staticmethod
    def _result_format(suite: Suite) -> dict[str, Any]:
        return {
            "result_format": "SUMMARY",
            "partial_unexpected_count": SAMPLE_ROWS,
            "unexpected_index_column_names": list(suite.key_columns),
        }

    def run(self, suite: Suite, frame: Any) -> SuiteResult:
        """Validate `frame` (a pandas DataFrame of `suite.query`'s columns, or of those of
        them `suite.columns` names)."""
        self._prepare()
        checkpoint = self._definitions[suite.name]
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame}, expectation_parameters=self.parameters
        )
        (validation,) = outcome.run_results.values()
        failures = []
        for result in validation.results:
            if result.success:
                continue
            config = result.expectation_config
            kwargs = config.kwargs
            columns = tuple(str(kwargs[k]) for k in COLUMN_KWARGS if k in kwargs) + tuple(
                str(c) for c in kwargs.get("column_list", ())
            )
            info = result.exception_info or {}
            failures.append(
                Failure(
                    expectation=config.type,
                    columns=columns,
                    unexpected=result.result.get("unexpected_count"),
                    note=config.notes or "",
                    sample=tuple(
                        {k: _plain(v) for k, v in row.items()}
                        for row in result.result.get("partial_unexpected_index_list") or ()
                        if isinstance(row, Mapping)
                    ),
                    error=info.get("exception_message") if info.get("raised_exception") else None,
                )
            )
        return SuiteResult(
            suite.name,
            len(frame),
            int(validation.statistics["evaluated_expectations"]),
            tuple(failures),
        )


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a cell (numpy scalars, timestamps)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# The module whose logger says, at INFO, on every ephemeral context (every validation), that
# it made a temporary directory for a Data Docs site this project never builds there.
_GX_CHATTY_LOGGER = "great_expectations.data_context.types.base"


def _import_great_expectations() -> Any:
    """Great Expectations, imported (seconds, the first time), its chatty logger quietened.
    The level is set after the import: importing that module sets its logger to INFO."""
    import great_expectations as gx

    logging.getLogger(_GX_CHATTY_LOGGER).setLevel(logging.WARNING)
    return gx

"""The batch pipeline: Avro files -> decode, dedupe, match, aggregate -> DuckDB.

`run_batch` builds and runs the Beam pipeline on the local runner, stages every table as
Parquet, then lands them in DuckDB in one transaction (`connectors.duckdb_sink`) and
returns the record account.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from connectors.alert_sinks import AlertDispatcher
from connectors.beam_files import CHUNK_SIZE, MessageChunk, ReadMessageChunks
from connectors.duckdb_sink import LoadReport, connect_writer, land_batch
from connectors.parquet_stage import WriteStagedRows
from connectors.schema_store import SchemaStore
from pipelines import rows
from pipelines.batch_transforms import (
    BUCKETS,
    ROWS,
    BacklogDailyRows,
    DedupeBuckets,
    MatchBuckets,
    TakeInChunks,
)
from pipelines.intake import IntakeRules
from pipelines.monitoring import AlertMonitor, deliver_after_load, dispatcher_from_settings
from pipelines.policy import SlaPolicy
from pipelines.quality_gate import QualityGate
from pipelines.settings import Settings

RECORDS_IN = "records_in"


log = logging.getLogger(__name__)


def beam_options(settings: Settings) -> PipelineOptions:
    """The one place Beam options come from."""
    return PipelineOptions(flags=[])


def batch_runner() -> FnApiRunner:
    """Beam's in-process FnApiRunner, named outright: the batch path has no timers, and the
    DirectRunner would first try to download a Prism binary (which fails offline, and on a
    connected machine would change the runner under the same command)."""
    return FnApiRunner()


def _count_in(chunk: MessageChunk) -> MessageChunk:
    _RECORDS_IN.inc(len(chunk))
    return chunk


_RECORDS_IN = Metrics.counter("removal_audit", RECORDS_IN)


def build(
    pipeline: beam.Pipeline,
    inputs: Sequence[Path],
    stage: Path,
    policy: SlaPolicy,
    rules: IntakeRules,
    schemas_dir: Path | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
    buckets: int = BUCKETS,
) -> None:
    """Wire the audit: read, intake, dedupe, match, aggregate, stage. `schemas_dir`: the
    schema catalog (None: the packaged one). Elements are chunks of `chunk_size` messages,
    then `buckets` shuffle buckets of events (`batch_transforms`): the rows are those of
    the per-record transforms, at a fraction of the runner's cost."""
    chunks = (
        pipeline
        | "ReadFiles" >> ReadMessageChunks(inputs, schemas_dir, chunk_size)
        | "CountIn" >> beam.Map(_count_in).with_output_types(MessageChunk)
    )
    intake = chunks | "DecodeAndValidate" >> TakeInChunks(rules, schemas_dir, buckets)
    unique = intake.deliveries | "DedupeEvents" >> DedupeBuckets(buckets)
    matched = unique.events | "MatchRequestsToActions" >> MatchBuckets(policy)
    backlog = matched.deltas | "BacklogByCategory" >> BacklogDailyRows()
    staged = {
        "Quarantine": intake[ROWS],
        "Events": unique[ROWS],
        "Lifecycles": matched[ROWS],
        "Backlog": backlog,
    }
    for label, rows_out in staged.items():
        _ = rows_out | f"Stage{label}" >> WriteStagedRows(stage, rows.SCHEMAS)


def run_batch(
    inputs: Sequence[Path], settings: Settings, *, now: datetime | None = None
) -> LoadReport:
    """Run the audit over `inputs` (raw-message Avro files) and land it in settings.database."""
    SchemaStore.load(settings.schemas_dir)  # a broken site catalog fails here, not in a worker
    policy = SlaPolicy.load(default_sla=settings.default_sla)
    rules = IntakeRules(
        now=now or datetime.now(UTC),
        max_clock_skew_seconds=settings.max_clock_skew_seconds,
        oldest_plausible=settings.oldest_plausible,
        max_message_bytes=settings.max_message_bytes,
    )
    dispatcher = dispatcher_from_settings(settings, kafka=settings.kafka_alerts)
    monitor = AlertMonitor.from_settings(settings, dispatcher.sinks)  # a bad rules file: here
    gate = None
    if settings.quality_gate:
        gate = QualityGate.from_settings(settings)
        gate.alert_sinks = dispatcher.sinks
    settings.database.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=settings.database.parent))
    try:
        pipeline = beam.Pipeline(runner=batch_runner(), options=beam_options(settings))
        build(pipeline, inputs, stage, policy, rules, settings.schemas_dir)
        result = pipeline.run()
        result.wait_until_finish()
        counters = result.metrics().query(MetricsFilter().with_name(RECORDS_IN))["counters"]
        records_in = sum(c.committed for c in counters)
        return land_batch(
            settings.database,
            stage,
            inputs=inputs,
            records_in=records_in,
            policy_version=policy.version,
            policy_rows=policy.rows(),
            gate=gate,
            alerts=monitor,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if dispatcher.sinks:  # also after a held load: its BatchHeld alert
            _deliver(settings.database, dispatcher)


def _deliver(database: Path, dispatcher: AlertDispatcher) -> None:
    con = connect_writer(database)
    try:
        report = deliver_after_load(con, dispatcher)
        if report.failed:
            log.warning(
                "%d alert notification(s) not delivered, kept queued (removal-audit alerts "
                "send retries them): %s",
                report.failed,
                "; ".join(report.errors),
            )
    finally:
        dispatcher.close()
        con.close()

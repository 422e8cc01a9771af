"""The streaming pipeline: Kafka -> decode, dedupe, lifecycles on the watermark -> DuckDB.

`removal-audit run --source kafka` calls `run_streaming`. Shape:

    ReadFromKafka -> DecodeAndValidate -> DedupeDeliveries -> ReleaseLifecycles -+
         (landed events, on a restart) --^        |  duplicates, quarantine       +-> Land
                                                  +-------------------------------+

Exactly-once landing across restarts. Beam's state does not outlive the job on a local
runner, so DuckDB is the durable state: each start (a "run") reads the partitions from the
first offset no landed batch covers (`StreamSink.resume_offsets`) and rebuilds the keyed
state from the events already landed, exported to Parquet before the job starts; what the
previous runs released stays released (`ReleaseLifecycles(released_through=...)`), so the
restart re-releases every rebuilt history at once, complete with the events re-read. Rows are
idempotent (event ids, source positions) and request histories are replaced only by newer
releases, so records read again after a crash land nothing twice, and the final tables of
an interrupted run equal those of an uninterrupted one.

Runner: Prism (event-time timers honoured), with the SDK worker in this process
(LOOPBACK): the landing stage is this process's only DuckDB writer.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import TimestampedValue
from kafka import KafkaConsumer

from connectors.duckdb_sink import land_policy
from connectors.duckdb_stream_sink import StreamSink
from connectors.duckdb_stream_writer import SharedWriter, WriterConfig
from connectors.kafka_commit import KafkaOffsetCommitter
from connectors.kafka_source import (
    KafkaSourceSettings,
    ReadFromKafka,
    list_partition_reads,
    source_settings,
)
from connectors.origin import SourceRef
from connectors.quarantine_topic import QuarantineForwarder, QuarantineTopicSettings
from connectors.schema_store import SchemaStore
from connectors.stream_offsets import PartitionKey
from pipelines import process_state, rows
from pipelines.intake import Accepted, IntakeRules
from pipelines.metrics import serve_metrics
from pipelines.model import ActionEvent, RequestEvent
from pipelines.monitoring import AlertMonitor, dispatcher_from_settings
from pipelines.policy import SlaPolicy
from pipelines.quality_gate import QualityGate
from pipelines.settings import Settings
from pipelines.streaming_dedupe import NEW_EVENTS, DedupeDeliveries
from pipelines.streaming_land import DUPLICATE, EVENT, QUARANTINE, RELEASE, Land
from pipelines.streaming_lifecycle import ReleaseLifecycles
from pipelines.streaming_monitor import MetricsRefresh, collector_for
from pipelines.transforms import DUPLICATES, DecodeAndValidate
from pipelines.transforms import QUARANTINE as QUARANTINE_TAG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamingPlan:
    """What a start of the streaming job reads: where each partition starts, the run
    number, and the landed events to rebuild state from (None on a first start)."""

    run: int
    start_offsets: Mapping[PartitionKey, int]
    landed_events: Mapping[str, Path] | None
    released_through: datetime | None = None


def landed_event(table: str, row: Mapping[str, Any]) -> TimestampedValue:
    """A row of request_events / action_events -> (Accepted, landed=True) at its event time.

    The event tables keep no message bytes, so payload and key are empty (b"", None): dedupe
    refuses a landed copy only for an identical copy at a lower position (a duplicate row,
    no bytes needed), so they never reach a quarantine row.
    """
    event: RequestEvent | ActionEvent = (
        RequestEvent.from_avro(row) if table == "request_events" else ActionEvent.from_avro(row)
    )
    origin = SourceRef.parse(str(row["source_ref"]))
    accepted = Accepted(event, origin, int(row["schema_version"]), b"", None)
    return TimestampedValue((accepted, True), event.event_time.timestamp())


def build(
    pipeline: beam.Pipeline,
    source: KafkaSourceSettings,
    plan: StreamingPlan,
    policy: SlaPolicy,
    rules: IntakeRules,
    writer: WriterConfig,
    shards: int = 64,
) -> list[str]:
    """Wire the streaming audit (see the module docstring); returns the ids of the stages
    that keep state in this process."""
    messages = pipeline | "ReadKafka" >> ReadFromKafka(source)
    # One catalog for the source's event-time read and for intake (see KafkaSourceSettings).
    intake = messages | "DecodeAndValidate" >> DecodeAndValidate(rules, source.schemas_dir)
    deliveries = [intake.accepted | "FromKafka" >> beam.Map(lambda a: (a, False))]
    for table, path in (plan.landed_events or {}).items():
        deliveries.append(
            pipeline
            | f"ReadLanded_{table}" >> beam.io.ReadFromParquet(str(path))
            | f"Landed_{table}" >> beam.Map(lambda row, t=table: landed_event(t, row))
        )
    dedupe = DedupeDeliveries()
    release = ReleaseLifecycles(policy, shards=shards, released_through=plan.released_through)
    unique = deliveries | "AllDeliveries" >> beam.Flatten() | "Dedupe" >> dedupe
    released = (
        unique.events | "Events" >> beam.Map(lambda a: a.event) | "ReleaseLifecycles" >> release
    )
    quarantined = (intake[QUARANTINE_TAG], unique[QUARANTINE_TAG]) | "AllQuarantine" >> (
        beam.Flatten()
    )
    items = (
        unique[NEW_EVENTS] | "EventRows" >> beam.Map(lambda a: (EVENT, rows.event_row(a))),
        unique[DUPLICATES] | "DuplicateRows" >> beam.Map(lambda r: (DUPLICATE, r)),
        quarantined | "QuarantineRows" >> beam.Map(lambda q: (QUARANTINE, rows.quarantine_row(q))),
        released | "Releases" >> beam.Map(lambda r: (RELEASE, r)),
    )
    land = Land(writer)
    _ = items | "AllRows" >> beam.Flatten() | "Land" >> land
    return [dedupe.stage_id, release.stage_id, land.stage_id]


def plan_run(
    settings: Settings, source: KafkaSourceSettings, policy: SlaPolicy, workdir: Path
) -> StreamingPlan:
    """Open the database, find where to resume, record the run, export the landed events."""
    settings.database.parent.mkdir(parents=True, exist_ok=True)
    with StreamSink(settings.database, settings.snapshot_path, settings.snapshot_every_s) as sink:
        land_policy(sink.connection, policy.version, policy.rows())
        resume = sink.resume_offsets()
        consumer = KafkaConsumer(**source.consumer_config())
        try:
            probe = dataclasses.replace(source, start_offsets=resume)
            reads = list_partition_reads(consumer, probe, "plan")
        finally:
            consumer.close()
        starts = {(r.topic, r.partition): r.start for r in reads}
        run = sink.start_run(starts)
        landed = None
        if resume:
            landed = sink.export_events(workdir)
        return StreamingPlan(run, starts, landed, sink.released_through())


def prism_options(prism_location: str) -> PipelineOptions:
    return PipelineOptions(
        flags=[],
        runner="PrismRunner",
        prism_location=prism_location,
        environment_type="LOOPBACK",
        prism_log_level="warn",
        streaming=True,
        # Beam applies this to the job's state stream too, which would end a streaming job
        # after 5 minutes (the default): a year instead.
        job_server_timeout=365 * 24 * 3600,
    )


def _warmed(gate: QualityGate) -> QualityGate:
    # Great Expectations takes seconds to import: here, before the job starts, rather than in
    # the writer thread at the first snapshot (the worker runs in this process, LOOPBACK).
    gate.runner.warm_up()
    return gate


def run_streaming(
    settings: Settings,
    prism_location: str,
    *,
    stop_at_end: bool = False,
    stop: threading.Event | None = None,
) -> int:
    """Run the streaming audit until the job ends (`stop_at_end`), SIGTERM/SIGINT, or
    `stop` is set. Returns the run number."""
    SchemaStore.load(settings.schemas_dir)  # a broken site catalog fails here, not in a worker
    policy = SlaPolicy.load(default_sla=settings.default_sla)
    rules = IntakeRules.from_settings(settings)
    with tempfile.TemporaryDirectory(
        prefix=".restart-", dir=settings.database.parent.resolve()
    ) as workdir:
        base = source_settings(settings, stop_at_end=stop_at_end)
        plan = plan_run(settings, base, policy, Path(workdir))
        source = dataclasses.replace(base, start_offsets=plan.start_offsets)
        dispatcher = dispatcher_from_settings(settings, kafka=True)
        gate = None
        if settings.quality_gate:
            gate = _warmed(QualityGate.from_settings(settings))
            gate.alert_sinks = dispatcher.sinks
        writer = WriterConfig(
            settings.database,
            settings.snapshot_path,
            settings.snapshot_every_s,
            plan.run,
            on_landed=KafkaOffsetCommitter(source.consumer_config(), settings.kafka_group_id)
            if settings.kafka_group_id
            else None,
            quarantine=QuarantineForwarder(QuarantineTopicSettings.from_source(source)),
            gate=None if gate is None else gate.check_stream,
            alerts=AlertMonitor.from_settings(settings, dispatcher.sinks),
            dispatcher=dispatcher,
            on_published=None
            if settings.metrics_port is None
            else MetricsRefresh(settings.database, source.consumer_config()),
        )
        server = None
        if settings.metrics_port is not None:
            collector = collector_for(settings.database)
            server = serve_metrics(settings.metrics_host, settings.metrics_port, collector)
            log.info("metrics at %s", server.url)
        log.info("run %d starts at %s", plan.run, dict(plan.start_offsets))
        pipeline = beam.Pipeline(options=prism_options(prism_location))
        stages = build(pipeline, source, plan, policy, rules, writer)
        try:
            result = pipeline.run()
            with _stopping(result, stop) as stopping:
                try:
                    result.wait_until_finish()
                except Exception:
                    # A stop signal sent to the whole process group also reaches the Prism
                    # runner, which then drops the job's streams: an expected end here.
                    if not stopping.requested:
                        raise
                    log.info("the job ended on the stop request", exc_info=True)
        finally:
            SharedWriter.release_all()
            process_state.drop(stages)
            if server is not None:
                server.close()
    return plan.run


class _stopping:
    """Cancel the job on SIGTERM / SIGINT or when `stop` is set; restore handlers after."""

    def __init__(self, result: Any, stop: threading.Event | None) -> None:
        self._result, self._stop = result, stop
        self._previous: dict[int, Any] = {}
        self._done = threading.Event()
        self.requested = False

    def _cancel(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.requested = True
        log.info("stopping the streaming job (%s)", f"signal {signum}" if signum else "stop")
        try:
            self._result.cancel()
        except Exception:  # already finished or the runner is gone
            log.debug("cancel failed", exc_info=True)

    def _watch(self) -> None:
        assert self._stop is not None
        while not self._done.is_set():
            if self._stop.wait(0.2):
                self._cancel()
                return

    def __enter__(self) -> _stopping:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._cancel)
        if self._stop is not None:
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

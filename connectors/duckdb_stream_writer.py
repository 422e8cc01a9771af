"""The streaming path's one DuckDB writer per process, shared by every landing DoFn
instance: it gathers what the bundles hand it and lands it in micro-batches from its own
thread, and keeps the auditors' snapshot fresh.

Beam may create several instances of the landing DoFn in one worker process; DuckDB allows
one writing process and its connections are not safe to share between threads. So each
database gets one `SharedWriter`: one `StreamSink` used only under its lock, and a daemon
thread that lands what was submitted every `flush_every_s` (or sooner when `max_rows`
are waiting), and publishes the snapshot (after refreshing backlog_daily) once the
database changed and `snapshot_every_s` passed, also when no more batches come.

Bundles are often small (a watermark step, a few timers); landing each in its own
transaction would make DuckDB's commit the pace of the pipeline. Landing later is safe
because nothing depends on Beam's own checkpoint: a record whose rows were not landed is
read again on the next start (`StreamSink.resume_offsets`). A failed landing stops the
job: the next `submit` raises it.

Example:
    config = WriterConfig(database, snapshot, snapshot_every_s=5.0, run=run)
    writer = SharedWriter.acquire(config)
    writer.submit(pending)          # pending: see `Pending`
    SharedWriter.release(config)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import duckdb
from kafka.errors import KafkaError

from connectors.alert_sinks import AlertDispatcher, DeliveryThread
from connectors.duckdb_sink import AUDIT_TABLES
from connectors.duckdb_stream_sink import LandingBatch, StreamSink
from connectors.quarantine_topic import QuarantineForwarder, QuarantineTopicError
from connectors.threads import join_patiently

log = logging.getLogger(__name__)


class Pending(Protocol):
    """Rows waiting to be landed, that absorb later ones."""

    watermark: datetime | None

    def __len__(self) -> int: ...

    def merge(self, later: Self) -> None: ...

    def batch(self) -> LandingBatch: ...


class AlertEvaluator(Protocol):
    def evaluate(self, con: duckdb.DuckDBPyConnection, through: date | None = None) -> Any: ...


class Gate(Protocol):
    def __call__(
        self,
        con: duckdb.DuckDBPyConnection,
        batch_ids: Sequence[str],
        scope: Mapping[str, Sequence[str]],
    ) -> bool: ...


# The tables a validation scope names by key (their one key column, AUDIT_TABLES).
SCOPE_TABLES = ("request_events", "action_events", "requests")


@dataclass(frozen=True)
class WriterConfig:
    database: Path
    snapshot: Path
    snapshot_every_s: float
    run: int | None = None
    flush_every_s: float = 0.5
    max_rows: int = 50_000
    # Told the next offset to read per partition with each snapshot published, i.e. of
    # what is landed (e.g. a KafkaOffsetCommitter); must pickle: the config travels to the
    # workers.
    on_landed: Callable[[Mapping[tuple[str, int], int]], None] | None = None
    # The data-quality gate (e.g. pipelines.quality_gate.QualityGate.check_stream): given
    # the writer's connection, the batches landed since the last snapshot and their keys per
    # table, it validates, records, and says whether the snapshot may be published.
    gate: Gate | None = None
    # Copies new quarantine rows to the quarantine topic after each landing (at least once;
    # DuckDB stays the record of truth, so a broker failure is logged and retried).
    quarantine: QuarantineForwarder | None = None
    # Evaluates the alert rules through the landed watermark's last midnight before each
    # snapshot is published (pipelines.monitoring.AlertMonitor), in its own transaction.
    alerts: AlertEvaluator | None = None
    # Delivers the queued alert notifications from a thread of its own.
    dispatcher: AlertDispatcher | None = None
    # Told the writer's connection and the next offset per partition after each snapshot
    # publication (e.g. pipelines.streaming_monitor.MetricsRefresh).
    on_published: (
        Callable[[duckdb.DuckDBPyConnection, Mapping[tuple[str, int], int]], None] | None
    ) = None


class WriterFailed(RuntimeError):
    """Landing failed in the writer thread; the job must stop (its restart resumes)."""


class SharedWriter:
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _writers: ClassVar[dict[Path, tuple[SharedWriter, int]]] = {}

    def __init__(self, config: WriterConfig) -> None:
        self.config = config
        self._sink = StreamSink(config.database, config.snapshot, config.snapshot_every_s)
        self._sink.attach_run(config.run)
        self._use = threading.Lock()  # the sink
        self._queue = threading.Condition()  # _pending, _failure
        self._pending: Pending | None = None
        self._failure: BaseException | None = None
        self._dirty = False
        self._published_at = -float("inf")
        self._watermark: datetime | None = None
        # Landed since the last snapshot, not validated yet: batch ids and keys per table.
        self._unvalidated: list[str] = []
        self._scope: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._delivery = None
        if config.dispatcher is not None and config.dispatcher.sinks:
            self._delivery = DeliveryThread(config.dispatcher, self._sink.connection, self._use)
        self._thread = threading.Thread(
            target=self._loop, name=f"duckdb-writer:{config.database.name}", daemon=True
        )
        self._thread.start()

    @classmethod
    def acquire(cls, config: WriterConfig) -> SharedWriter:
        key = config.database.resolve()
        with cls._lock:
            writer, users = cls._writers.get(key, (None, 0))
            if writer is None:
                writer = SharedWriter(config)
            cls._writers[key] = (writer, users + 1)
            return writer

    @classmethod
    def release(cls, config: WriterConfig) -> None:
        key = config.database.resolve()
        with cls._lock:
            writer, users = cls._writers.get(key, (None, 0))
            if writer is None:
                return
            if users > 1:
                cls._writers[key] = (writer, users - 1)
                return
            del cls._writers[key]
        writer.close()

    @classmethod
    def release_all(cls) -> None:
        """Close every writer of this process (the job ended without tearing its DoFns down,
        e.g. cancelled): what was submitted is landed, the snapshot published."""
        with cls._lock:
            writers = [writer for writer, _ in cls._writers.values()]
            cls._writers.clear()
        for writer in writers:
            writer.close()

    # -- the DoFns' side ----------------------------------------------------------------------

    def submit(self, pending: Pending) -> None:
        """Hand rows over for landing. Blocks while `max_rows` are already waiting (the
        writer is behind); raises WriterFailed once a landing has failed."""
        with self._queue:
            while (
                self._failure is None
                and self._pending is not None
                and len(self._pending) >= self.config.max_rows
            ):
                self._queue.notify_all()
                self._queue.wait(1.0)
            if self._failure is not None:
                raise WriterFailed(f"landing in {self.config.database} failed") from self._failure
            if self._pending is None:
                self._pending = pending
            else:
                self._pending.merge(pending)
            if len(self._pending) >= self.config.max_rows:
                self._queue.notify_all()

    # -- the writer thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._queue:
                self._queue.wait(self.config.flush_every_s)
            try:
                self.flush()
                every = self.config.snapshot_every_s
                if self._dirty and time.monotonic() - self._published_at >= every:
                    self.publish_now()
            except BaseException as error:  # kept for submit() to raise in the job
                log.exception("landing in %s failed", self.config.database)
                with self._queue:
                    self._failure = error
                    self._queue.notify_all()
                return

    def flush(self) -> bool:
        """Land what is waiting, in one transaction. Returns whether anything landed."""
        with self._queue:
            pending, self._pending = self._pending, None
            self._queue.notify_all()
        if pending is None:
            return False
        with self._use:
            batch = pending.batch()
            landed = self._sink.write_batch(batch)
            if landed:
                self._dirty = True
                self._unvalidated.append(batch.batch_id)
                for table in SCOPE_TABLES:
                    if table in batch.tables:
                        keys = batch.tables[table].column(AUDIT_TABLES[table]).to_pylist()
                        self._scope.setdefault(table, []).extend(keys)
                self._forward_quarantine()
                if pending.watermark is not None:
                    wm = pending.watermark
                    self._watermark = wm if self._watermark is None else max(self._watermark, wm)
        return landed

    def _forward_quarantine(self) -> None:
        if self.config.quarantine is None:
            return
        try:
            self.config.quarantine.forward(self._sink.connection)
        except (QuarantineTopicError, KafkaError) as error:
            log.warning("quarantine topic: %s (retried after the next landing)", error)

    def publish_now(self) -> None:
        """Refresh backlog_daily up to the landed watermark, validate what landed since the
        last snapshot, and publish the snapshot unless the gate holds it back."""
        with self._use:
            self._sink.refresh_backlog(self._watermark)
            publishable = True
            if self.config.gate is not None:
                publishable = self.config.gate(
                    self._sink.connection, list(self._unvalidated), dict(self._scope)
                )
                self._unvalidated, self._scope = [], {}
            if publishable and self.config.alerts is not None and self._watermark is not None:
                self._evaluate_alerts(self._watermark)
            if publishable:
                self._sink.publish_snapshot()
            self._dirty = False
            self._published_at = time.monotonic()
            if self.config.on_landed is not None or self.config.on_published is not None:
                # Reads the whole ledger: once per snapshot, not once per micro-batch.
                offsets = self._sink.resume_offsets()
                if self.config.on_landed is not None:
                    self.config.on_landed(offsets)
                if self.config.on_published is not None:
                    self.config.on_published(self._sink.connection, offsets)

    def _evaluate_alerts(self, watermark: datetime) -> None:
        assert self.config.alerts is not None
        con = self._sink.connection
        con.execute("BEGIN")
        try:
            outcome = self.config.alerts.evaluate(con, watermark.astimezone(UTC).date())
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if outcome.fired or outcome.resolved:
            log.info("%s", outcome.describe())
            if self._delivery is not None:
                self._delivery.poke()

    def close(self) -> None:
        self._stop.set()
        with self._queue:
            self._queue.notify_all()
        # The connection must not close while the thread is still inside it, so wait for
        # it however long its landing takes (connectors.threads). A thread that failed
        # has returned (its error is in _failure): the join ends at once.
        join_patiently(
            self._thread,
            f"landing into {self.config.database} or publishing its snapshot, before the "
            "database closes",
        )
        try:
            if self._failure is None:
                self.flush()
                if self._dirty:
                    self.publish_now()
        finally:
            if self._delivery is not None:
                self._delivery.close()
            with self._use:
                if self.config.quarantine is not None:
                    self._forward_quarantine()
                    self.config.quarantine.close()
                self._sink.close()

"""The streaming job as the end-to-end tests drive it: `removal-audit run --source kafka` in
a subprocess, its progress read from the auditors' snapshot, and what it landed read back
from DuckDB (content fingerprints, the offsets the batch ledger covers).

Shared by tests/test_streaming.py (the seed scenario) and tests/test_poison_matrix.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
from kafka import KafkaConsumer, TopicPartition

from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_sink import table_fingerprints
from connectors.stream_offsets import merge_runs
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC

# Columns that name a file position in the batch path and a topic offset in the stream.
PROVENANCE = frozenset({"source_ref", "kept_source_ref", "quarantine_id"})
AUDIT_TABLES = (
    "request_events",
    "action_events",
    "requests",
    "lifecycle_transitions",
    "sla_breaches",
    "backlog_daily",
    "quarantine",
    "duplicate_deliveries",
)
INPUT_TOPICS = (REQUESTS_TOPIC, ACTIONS_TOPIC)


def cli(*args: str) -> list[str]:
    """The `removal-audit` command line, run with this interpreter."""
    return [sys.executable, "-m", "pipelines.cli", *args]


class StreamingJob:
    """`removal-audit run --source kafka` in its own process group (so that a SIGKILL takes
    the Prism runner it started down with it, as a container stop would).

    `records`: how many records the topics will hold in all; `wait_for` fails as soon as
    the snapshot accounts for more (a record counted twice). `env`: extra settings.
    """

    def __init__(
        self,
        database: Path,
        bootstrap: str,
        prefix: str,
        prism: str,
        log: Path,
        *,
        records: int | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.database, self.log, self.records = database, log, records
        self.snapshot = database.with_name(f"{database.stem}.snapshot.duckdb")
        environment = {
            **os.environ,
            "REMOVAL_AUDIT_IDLE_TIMEOUT_SECONDS": "5",
            "REMOVAL_AUDIT_MAX_OUT_OF_ORDERNESS_SECONDS": "60",
            **(env or {}),
        }
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                cli(
                    *("run", "--source", "kafka", "--db", str(database)),
                    *("--bootstrap-servers", bootstrap, "--topic-prefix", prefix),
                    *("--snapshot-every", "2", "--prism-location", prism),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def state(self) -> dict[str, Any] | None:
        """What the auditors' snapshot shows: records accounted for, and the watermark the
        latest run has landed up to."""
        if not self.snapshot.exists():
            return None
        con = connect_auditor(self.snapshot)
        try:
            row: Any = con.execute(
                "SELECT (SELECT count(*) FROM request_events) + (SELECT count(*) FROM "
                "action_events) + (SELECT count(*) FROM duplicate_deliveries) + "
                "(SELECT count(*) FROM quarantine), "
                "(SELECT watermark FROM stream_runs ORDER BY run DESC LIMIT 1)"
            ).fetchone()
        finally:
            con.close()
        return {"accounted": int(row[0]), "watermark": row[1]}

    def wait_for(self, done: Callable[[dict[str, Any]], bool], budget_s: float) -> dict[str, Any]:
        deadline, state = time.monotonic() + budget_s, None
        while time.monotonic() < deadline:
            assert self.alive(), f"the streaming job exited:\n{self.tail()}"
            state = self.state()
            if state is not None and self.records is not None:
                assert state["accounted"] <= self.records, f"a record counted twice: {state}"
            if state is not None and done(state):
                return state
            time.sleep(1.0)
        raise AssertionError(
            f"the streaming job did not get there in {budget_s} s (last seen: {state}):\n"
            f"{self.tail()}"
        )

    def terminate(self) -> int:
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=120)

    def terminate_alone(self, budget_s: float = 10.0) -> tuple[int, bool]:
        """SIGTERM to the job's own process, not its group, as a service manager may send it:
        (its exit code, whether anything it started still runs `budget_s` after it ended)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        deadline = time.monotonic() + budget_s
        while True:
            try:
                os.killpg(self.process.pid, 0)  # its group (start_new_session): Prism's too
            except ProcessLookupError:
                return code, False
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                return code, True
            time.sleep(0.2)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def content_fingerprints(
    database: Path, tables: Iterable[str] = AUDIT_TABLES
) -> dict[str, tuple[int, str]]:
    """Row count and md5 of each audit table's rows, provenance columns left out."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        every = table_fingerprints(con, leave_out=PROVENANCE)
    finally:
        con.close()
    return {table: every[table] for table in tables}


def end_offsets(
    bootstrap: str, prefix: str, topics: Iterable[str] = INPUT_TOPICS
) -> dict[tuple[str, int], int]:
    """(Kafka topic, partition) -> end offset, for every partition of `prefix` + topics."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [
            TopicPartition(prefix + topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(prefix + topic) or ())
        ]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def landed_runs(database: Path) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """The offsets the batch ledger covers, merged into runs per partition."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT topic, partition, first, last FROM batch_ledger_offsets"
        ).fetchall()
    finally:
        con.close()
    runs: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for topic, partition, first, last in rows:
        runs.setdefault((topic, partition), []).append((first, last))
    return {key: list(merge_runs(found)) for key, found in runs.items()}

"""The streaming path end to end on the seed scenario, against the real broker and Prism:
`removal-audit publish` (time-compressed) -> `removal-audit run --source kafka` -> DuckDB.

The final tables equal the batch path's over the same files (every column but the
provenance ones, which name a file position in one and a topic offset in the other), the
seed figures come out of the streaming database, auditors query the snapshot while the job
runs, and a job stopped with SIGTERM, then killed with SIGKILL, then restarted, ends with
the same tables: no row twice, no row missing, every offset of every partition landed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.duckdb_reader import connect_auditor, run_sql
from connectors.duckdb_sink import table_fingerprints
from connectors.kafka_publish import PublishSettings, ensure_topics
from connectors.stream_offsets import merge_runs
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC
from pipelines.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prism]

RECORDS = 63_281  # every message of the seed scenario (test_demo holds the account)
# The seed spans 2017-01 to 2021-05: about 70 s of wall time at this speedup.
SPEEDUP = 2_000_000.0
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
FINISH_BUDGET_S = 900.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


class StreamingJob:
    """`removal-audit run --source kafka` in its own process group (so that a SIGKILL takes
    the Prism runner it started down with it, as a container stop would)."""

    def __init__(self, database: Path, bootstrap: str, prefix: str, prism: str, log: Path):
        self.database, self.log = database, log
        self.snapshot = database.with_name(f"{database.stem}.snapshot.duckdb")
        env = {
            **os.environ,
            "REMOVAL_AUDIT_IDLE_TIMEOUT_SECONDS": "5",
            "REMOVAL_AUDIT_MAX_OUT_OF_ORDERNESS_SECONDS": "60",
        }
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                _cli(
                    *("run", "--source", "kafka", "--db", str(database)),
                    *("--bootstrap-servers", bootstrap, "--topic-prefix", prefix),
                    *("--snapshot-every", "2", "--prism-location", prism),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
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
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            assert self.alive(), f"the streaming job exited:\n{self.tail()}"
            state = self.state()
            if state is not None:
                assert state["accounted"] <= RECORDS, f"a record counted twice: {state}"
            if state is not None and done(state):
                return state
            time.sleep(1.0)
        raise AssertionError(f"the streaming job did not get there in {budget_s} s:\n{self.tail()}")

    def terminate(self) -> int:
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=120)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _finished(state: Mapping[str, Any]) -> bool:
    # Everything read is accounted for, and the landed watermark has reached today: every
    # deadline of the seed has passed it, so every release is landed.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (
        state["accounted"] == RECORDS
        and state["watermark"] is not None
        and (state["watermark"] >= today)
    )


def content_fingerprints(database: Path) -> dict[str, tuple[int, str]]:
    """Row count and md5 of each audit table's rows, provenance columns left out."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        every = table_fingerprints(con, leave_out=PROVENANCE)
    finally:
        con.close()
    return {table: every[table] for table in AUDIT_TABLES}


def _end_offsets(bootstrap: str, prefix: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [
            TopicPartition(prefix + topic, p)
            for topic in (REQUESTS_TOPIC, ACTIONS_TOPIC)
            for p in sorted(consumer.partitions_for_topic(prefix + topic) or ())
        ]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def _landed_runs(database: Path) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """The offsets the batch ledger covers, merged into runs per partition."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT o.topic, o.partition, o.first, o.last FROM batch_ledger, unnest(from_json("
            'offsets, \'[{"topic":"VARCHAR","partition":"INTEGER","first":"BIGINT",'
            '"last":"BIGINT"}]\')) AS u(o)'
        ).fetchall()
    finally:
        con.close()
    runs: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for topic, partition, first, last in rows:
        runs.setdefault((topic, partition), []).append((first, last))
    return {key: list(merge_runs(found)) for key, found in runs.items()}


def assert_same_as_batch(database: Path, batch: Path, bootstrap: str, prefix: str) -> None:
    assert content_fingerprints(database) == content_fingerprints(batch)
    # Exactly once per offset: every offset of every partition is covered by the ledger,
    # and (the counts above) no row twice.
    ends = _end_offsets(bootstrap, prefix)
    assert sum(ends.values()) == RECORDS
    assert _landed_runs(database) == {key: [(0, end - 1)] for key, end in ends.items()}
    con = connect_auditor(database)
    try:
        account = con.execute("SELECT * FROM stream_account").fetchall()
    finally:
        con.close()
    assert account == [(RECORDS, 62_672, 590, 19, True)]  # as the batch path's account


def _seed_figures(database: Path) -> dict[str, int]:
    con = connect_auditor(database)
    try:
        _, rows = run_sql(
            con,
            "SELECT category, count(*) FROM request_status_as_of(TIMESTAMPTZ "
            "'2021-03-01 00:00:00+00') WHERE status IN ('OPEN', 'OVERDUE', 'DECLINED') "
            "GROUP BY ALL",
        )
    finally:
        con.close()
    return {str(category): int(count) for category, count in rows}


@pytest.fixture
def published(
    demo: tuple[Settings, str], kafka_bootstrap: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh topic prefix being filled with the seed scenario, time-compressed."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    settings = PublishSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(settings, [prefix + t for t in (REQUESTS_TOPIC, ACTIONS_TOPIC)])
    publisher = subprocess.Popen(
        _cli(
            *("publish", "--data-dir", str(demo[0].data_dir)),
            *("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix),
            *("--speedup", str(SPEEDUP)),
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        yield prefix, publisher
    finally:
        publisher.kill()
        publisher.wait()


def test_streaming_equals_batch_and_auditors_read_the_snapshot_meanwhile(
    demo: tuple[Settings, str],
    published: tuple[str, subprocess.Popen[bytes]],
    kafka_bootstrap: str,
    prism_location: str,
    tmp_path: Path,
) -> None:
    prefix, publisher = published
    database = tmp_path / "stream.duckdb"
    job = StreamingJob(database, kafka_bootstrap, prefix, prism_location, tmp_path / "job.log")
    try:
        # Mid-stream, the auditors' SQL answers from the snapshot (the writer holds the
        # database itself).
        partial = job.wait_for(lambda s: 5_000 <= s["accounted"] < RECORDS, FINISH_BUDGET_S)
        answer = subprocess.run(
            _cli(
                "sql", "--db", str(job.snapshot), "--format", "csv", "SELECT count(*) FROM requests"
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert answer.returncode == 0, answer.stderr
        assert int(answer.stdout.split()[-1]) > 0, answer.stdout
        assert job.alive() and partial["accounted"] < RECORDS

        assert publisher.wait(timeout=FINISH_BUDGET_S) == 0
        job.wait_for(_finished, FINISH_BUDGET_S)
        assert job.terminate() == 0, job.tail()
    finally:
        if job.alive():
            job.kill()

    assert_same_as_batch(database, demo[0].database, kafka_bootstrap, prefix)
    # Landed offsets are committed to the consumer group, for lag monitoring.
    group = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="removal-audit")
    try:
        ends = _end_offsets(kafka_bootstrap, prefix)
        committed = {key: group.committed(TopicPartition(*key)) for key in ends}
    finally:
        group.close()
    assert committed == ends
    figures = _seed_figures(database)
    assert sum(figures.values()) == 2_862
    assert figures["SUICIDE_PROMOTION"] == 2_336
    assert figures["CHILD_SEXUAL_ABUSE_MATERIAL"] == 352
    assert figures["DRUGS"] == 174


def test_stopped_killed_and_restarted_job_lands_every_row_once(
    demo: tuple[Settings, str],
    published: tuple[str, subprocess.Popen[bytes]],
    kafka_bootstrap: str,
    prism_location: str,
    tmp_path: Path,
) -> None:
    prefix, publisher = published
    database, log = tmp_path / "stream.duckdb", tmp_path / "job.log"

    def start() -> StreamingJob:
        return StreamingJob(database, kafka_bootstrap, prefix, prism_location, log)

    job = start()
    try:
        first = job.wait_for(lambda s: s["accounted"] >= 8_000, FINISH_BUDGET_S)
        assert first["accounted"] < RECORDS, "stopped too late to test a restart"
        assert job.terminate() == 0, job.tail()  # SIGTERM: cancel, land what was read

        job = start()
        second = job.wait_for(
            lambda s: s["accounted"] >= first["accounted"] + 8_000, FINISH_BUDGET_S
        )
        assert second["accounted"] < RECORDS, "killed too late to test a restart"
        job.kill()  # SIGKILL mid-stream: whatever was not landed is read again

        job = start()
        assert publisher.wait(timeout=FINISH_BUDGET_S) == 0
        job.wait_for(_finished, FINISH_BUDGET_S)
        assert job.terminate() == 0, job.tail()
    finally:
        if job.alive():
            job.kill()

    assert_same_as_batch(database, demo[0].database, kafka_bootstrap, prefix)
    con = duckdb.connect(str(database), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM stream_runs").fetchall() == [(3,)]
    finally:
        con.close()

"""The streaming path end to end on the seed scenario, against the real broker and Prism:
`removal-audit publish` (time-compressed) -> `removal-audit run --source kafka` -> DuckDB.

The final tables equal the batch path's over the same files (every column but the
provenance ones, which name a file position in one and a topic offset in the other), the
seed figures come out of the streaming database, auditors query the snapshot while the job
runs, and a job stopped with SIGTERM, then killed with SIGKILL, then restarted, ends with
the same tables: no row twice, no row missing, every offset of every partition landed.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.duckdb_reader import connect_auditor, run_sql
from connectors.kafka_publish import PublishSettings, ensure_topics
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC
from pipelines.settings import Settings
from tests.streaming_job import StreamingJob, cli, content_fingerprints, end_offsets, landed_runs

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prism]

RECORDS = 63_281  # every message of the seed scenario (test_demo holds the account)
# The seed spans 2017-01 to 2021-05: about 140 s of wall time at this speedup, so that the
# restart test stops and kills a job mid-stream however fast the job catches up.
SPEEDUP = 1_000_000.0
FINISH_BUDGET_S = 900.0


def _finished(state: Mapping[str, Any]) -> bool:
    # Everything read is accounted for, and the landed watermark has reached today: every
    # deadline of the seed has passed it, so every release is landed.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (
        state["accounted"] == RECORDS
        and state["watermark"] is not None
        and (state["watermark"] >= today)
    )


def assert_same_as_batch(database: Path, batch: Path, bootstrap: str, prefix: str) -> None:
    assert content_fingerprints(database) == content_fingerprints(batch)
    # Exactly once per offset: every offset of every partition is covered by the ledger,
    # and (the counts above) no row twice.
    ends = end_offsets(bootstrap, prefix)
    assert sum(ends.values()) == RECORDS
    assert landed_runs(database) == {key: [(0, end - 1)] for key, end in ends.items()}
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
        cli(
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
    job = StreamingJob(
        database, kafka_bootstrap, prefix, prism_location, tmp_path / "job.log", records=RECORDS
    )
    try:
        # Mid-stream, the auditors' SQL answers from the snapshot (the writer holds the
        # database itself).
        partial = job.wait_for(lambda s: 5_000 <= s["accounted"] < RECORDS, FINISH_BUDGET_S)
        answer = subprocess.run(
            cli(
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
        ends = end_offsets(kafka_bootstrap, prefix)
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
        return StreamingJob(database, kafka_bootstrap, prefix, prism_location, log, records=RECORDS)

    job = start()
    try:
        # Stopped early, while the publisher still sends: SIGTERM cancels the job, which then
        # lands what it has read, so a job stopped once every message was out would land them
        # all and leave its restart nothing to do. (Measured: the job lands slowly while
        # messages arrive and fast once they stop; the first 1,000 rows landed 30 s into the
        # 140 s of publishing, 8,000 only after it had ended.)
        job.wait_for(lambda s: s["accounted"] >= 1_000, FINISH_BUDGET_S)
        assert publisher.poll() is None, "the publisher finished before the job was stopped"
        assert job.terminate() == 0, job.tail()  # SIGTERM: cancel, land what was read
        # What the first run landed in all (its last snapshot, published as it stopped):
        # only the second run can take the count past it.
        first = job.state()
        assert first is not None and first["accounted"] < RECORDS, "stopped too late"

        job = start()
        second = job.wait_for(
            lambda s: s["accounted"] >= first["accounted"] + 2_000, FINISH_BUDGET_S
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

"""The streaming job under measurement: throughput over a pre-filled topic, and latency from
Kafka append to the row being queryable while events arrive at a steady rate.

Both run `removal-audit run --source kafka` as a user would (its own process group, Prism
started by it), with the project's default settings except the snapshot interval of the
latency run. What landed, and when, is read back from the job's batch ledger: each landed
micro-batch names the offsets it covers and its commit time. A row is queryable by the
writer when its batch commits, and by auditors when a snapshot containing that batch is
published; both are reported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from kafka import KafkaConsumer, TopicPartition

from bench.proc import Measured, RssSampler, run_measured
from bench.publish import publish_messages
from bench.workload import Workload
from connectors.duckdb_reader import connect_auditor
from connectors.kafka_publish import PublishSettings, ensure_topics
from connectors.stream_offsets import merge_runs
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC

TOPICS = (REQUESTS_TOPIC, ACTIONS_TOPIC)
WARM_UP = 1_000  # messages sent before the measured ones

LEDGER_SQL = (
    "SELECT batch_id, committed_at, topic, partition, first, last FROM batch_ledger_offsets"
)


def job_argv(
    python: str, database: Path, bootstrap: str, prefix: str, prism: str, snapshot_every: float
) -> list[str]:
    return [
        python,
        "-m",
        "pipelines.cli",
        *("run", "--source", "kafka", "--db", str(database)),
        *("--bootstrap-servers", bootstrap, "--topic-prefix", prefix),
        *("--snapshot-every", f"{snapshot_every:g}", "--prism-location", prism),
    ]


@dataclass(frozen=True)
class LedgerEntry:
    batch_id: str
    committed: float  # epoch seconds
    topic: str
    partition: int
    first: int
    last: int


def read_ledger(con: duckdb.DuckDBPyConnection) -> list[LedgerEntry]:
    return [
        LedgerEntry(b, c.timestamp(), t, p, f, last)
        for b, c, t, p, f, last in con.execute(LEDGER_SQL).fetchall()
    ]


def ledger_gaps(
    ledger: Sequence[LedgerEntry], ends: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """Offsets below each partition's end offset that no landed batch covers, as runs
    (first, last), for the partitions that have any: where messages a job reported as
    done were never landed. Empty when the ledger covers every offset; then a message
    missing from the tables was lost after its batch was recorded.

    Example: ledger_gaps([LedgerEntry("b", 0.0, "t", 0, 0, 4), LedgerEntry("c", 0.0, "t",
    0, 7, 8)], {("t", 0): 12}) == {("t", 0): [(5, 6), (9, 11)]}
    """
    covered: dict[tuple[str, int], list[tuple[int, int]]] = {key: [] for key in ends}
    for e in ledger:
        covered.setdefault((e.topic, e.partition), []).append((e.first, e.last))
    gaps: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for key, runs in covered.items():
        position, missing = 0, []
        for first, last in merge_runs(runs):
            if first > position:
                missing.append((position, first - 1))
            position = max(position, last + 1)
        if position < ends.get(key, 0):
            missing.append((position, ends[key] - 1))
        if missing:
            gaps[key] = missing
    return gaps


def _one_row(database: Path, sql: str) -> Any:
    """The first row of a read-only query on a job's database (after the job)."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql).fetchall()[0]
    finally:
        con.close()


def open_requests(database: Path) -> int:
    """Requests unresolved (open, overdue, declined) at the data horizon."""
    sql = (
        "SELECT count(*) FROM request_status_as_of((SELECT horizon FROM data_horizon))"
        " WHERE status IN ('OPEN', 'OVERDUE', 'DECLINED')"
    )
    return int(_one_row(database, sql)[0])


# The landed tables that account for a message: each is in exactly one of them.
ACCOUNTED = ("request_events", "action_events", "duplicates", "quarantined")


def landed_account(database: Path) -> dict[str, int]:
    """Rows of each table in ACCOUNTED, and the requests the events make."""
    row = _one_row(
        database,
        "SELECT (SELECT count(*) FROM request_events), (SELECT count(*) FROM action_events),"
        " (SELECT count(*) FROM duplicate_deliveries), (SELECT count(*) FROM quarantine),"
        " (SELECT count(*) FROM requests)",
    )
    return dict(
        zip(
            (*ACCOUNTED, "requests"),
            map(int, row),
            strict=True,
        )
    )


@dataclass(frozen=True)
class ThroughputResult:
    measured: Measured
    messages: int
    first_commit_s: float  # from launch to the first landed batch
    last_commit_s: float  # from launch to the last landed batch
    account: dict[str, int]
    gaps: dict[tuple[str, int], list[tuple[int, int]]]  # offsets no landed batch covers

    @property
    def rate(self) -> float:
        """Messages per second, launch to exit (runner start-up included)."""
        return self.messages / self.measured.seconds

    @property
    def steady_rate(self) -> float:
        """Messages per second between the first and the last landed batch."""
        span = self.last_commit_s - self.first_commit_s
        return self.messages / span if span > 0 else 0.0

    @property
    def unaccounted(self) -> int:
        """Messages on the topics that no landed table accounts for (0 when all landed)."""
        return self.messages - sum(self.account[k] for k in ACCOUNTED)


def run_throughput(
    python: str,
    workdir: Path,
    bootstrap: str,
    prefix: str,
    prism: str,
    messages: int,
    timeout: float,
    on_start: Callable[[int], object] | None = None,
) -> ThroughputResult:
    """The job over topics already holding `messages`, `--stop-at-end`: it exits once it
    has read them all and released every lifecycle."""
    database = workdir / "stream.duckdb"
    argv = [*job_argv(python, database, bootstrap, prefix, prism, 30.0), "--stop-at-end"]
    launched = time.time()
    measured = run_measured(argv, log=workdir / "stream.log", timeout=timeout, on_start=on_start)
    if measured.returncode != 0:
        raise RuntimeError(measured.failure("the streaming job", tail=3000))
    con = duckdb.connect(str(database), read_only=True)
    try:
        ledger = read_ledger(con)
    finally:
        con.close()
    commits = [e.committed for e in ledger]
    return ThroughputResult(
        measured=measured,
        messages=messages,
        first_commit_s=min(commits) - launched,
        last_commit_s=max(commits) - launched,
        account=landed_account(database),
        gaps=ledger_gaps(ledger, end_offsets(bootstrap, [prefix + t for t in TOPICS])),
    )


class SnapshotWatcher:
    """Polls the auditors' snapshot; remembers when each batch first became visible."""

    def __init__(self, snapshot: Path, interval: float = 0.1) -> None:
        self.snapshot, self.interval = snapshot, interval
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SnapshotWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.snapshot.exists():
                with contextlib.suppress(duckdb.Error, OSError):
                    con = connect_auditor(self.snapshot)
                    try:
                        seen = time.time()
                        for (batch_id,) in con.execute(
                            "SELECT batch_id FROM batch_ledger"
                        ).fetchall():
                            self.first_seen.setdefault(batch_id, seen)
                    finally:
                        con.close()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class LatencyResult:
    rate: float  # offered events/s
    achieved_rate: float  # what the publisher kept up
    sent: int
    landed: int
    commit_p50: float
    commit_p99: float
    visible_p50: float
    visible_p99: float
    snapshot_every: float
    peak_rss: int


def latencies(
    ledger: Sequence[LedgerEntry],
    sent: Mapping[tuple[str, int], Mapping[int, int]],
    when: Mapping[str, float],
) -> list[float]:
    """Seconds from each message's send (its Kafka CreateTime, ms by offset) to
    `when[batch]` of the batch that landed it (messages of batches without a time in
    `when` are left out)."""
    out: list[float] = []
    for e in ledger:
        at = when.get(e.batch_id)
        times = sent.get((e.topic, e.partition))
        if at is None or times is None:
            continue
        out.extend(at - times[o] / 1000.0 for o in range(e.first, e.last + 1) if o in times)
    return out


def run_latency(
    python: str,
    workdir: Path,
    bootstrap: str,
    prefix: str,
    prism: str,
    workload: Workload,
    *,
    rate: float,
    seconds: float,
    snapshot_every: float,
) -> LatencyResult:
    """Start the job on empty topics, feed `rate` events/s for `seconds`, stop it once it
    has landed them; latency from append to commit and to snapshot visibility."""
    topics = [prefix + t for t in TOPICS]
    ensure_topics(PublishSettings(bootstrap), topics)
    database = workdir / "latency.duckdb"
    snapshot = database.with_name(f"{database.stem}.snapshot.duckdb")
    log = (workdir / "latency.log").open("wb")
    process = subprocess.Popen(
        job_argv(python, database, bootstrap, prefix, prism, snapshot_every),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sampler = RssSampler(process.pid).start()
    watcher = SnapshotWatcher(snapshot).start()
    try:
        # The job publishes a snapshot once it landed something: a few messages first,
        # so that the measured ones meet a job that is up and reading.
        messages = workload.raw_messages()
        publish_messages(messages, bootstrap, prefix, limit=WARM_UP)
        _wait(lambda: snapshot.exists(), 300, "the job's first snapshot", process)
        published = publish_messages(
            messages, bootstrap, prefix, rate=rate, limit=int(rate * seconds)
        )
        ends = end_offsets(bootstrap, topics)
        _wait(lambda: _covered(watcher, database, ends), 300, "every message landed", process)
    finally:
        watcher.stop()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        peak = sampler.stop()
        log.close()
    con = duckdb.connect(str(database), read_only=True)
    try:
        ledger = read_ledger(con)
    finally:
        con.close()
    sent = published.send_times()
    commit = latencies(ledger, sent, {e.batch_id: e.committed for e in ledger})
    visible = latencies(ledger, sent, watcher.first_seen)
    return LatencyResult(
        rate=rate,
        achieved_rate=published.rate,
        sent=published.messages,
        landed=len(commit),
        commit_p50=percentile(commit, 0.5),
        commit_p99=percentile(commit, 0.99),
        visible_p50=percentile(visible, 0.5),
        visible_p99=percentile(visible, 0.99),
        snapshot_every=snapshot_every,
        peak_rss=peak,
    )


def _wait(done: Any, budget: float, what: str, process: Any) -> None:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the streaming job exited while waiting for {what}")
        if done():
            return
        time.sleep(0.5)
    raise TimeoutError(f"no {what} in {budget:.0f} s")


def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def _covered(watcher: SnapshotWatcher, database: Path, ends: Mapping[tuple[str, int], int]) -> bool:
    """Every offset below `ends` is in a batch the snapshot shows."""
    if not watcher.snapshot.exists():
        return False
    with contextlib.suppress(duckdb.Error, OSError):
        con = connect_auditor(watcher.snapshot)
        try:
            ledger = read_ledger(con)
        finally:
            con.close()
        top: dict[tuple[str, int], int] = {}
        for e in ledger:
            key = (e.topic, e.partition)
            top[key] = max(top.get(key, -1), e.last)
        return all(top.get(key, -1) >= end - 1 for key, end in ends.items() if end)
    return False

"""The streaming sink lands each batch once, all or nothing, and publishes snapshots that
another process can read while the writer keeps writing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_sink import table_fingerprints
from connectors.duckdb_stream_sink import (
    RELEASES_SCHEMA,
    LandingBatch,
    StreamSink,
    batch_id_for,
)
from pipelines.rows import SCHEMAS

T0 = datetime(2021, 2, 1, tzinfo=UTC)
REQUESTS, ACTIONS = "removal.requests", "removal.actions"
Row = dict[str, Any]


def request_event(n: int) -> Row:
    return {
        "event_id": f"rq-{n}",
        "request_id": f"R{n}",
        "event_type": "ISSUED",
        "authority": "Roskomnadzor",
        "authority_kind": "REGULATOR",
        "jurisdiction": "RU",
        "platform": "twitter",
        "content_id": f"c{n}",
        "content_type": "POST",
        "category": "DRUGS",
        "legal_basis": "149-FZ art. 15.1",
        "requested_action": "REMOVE",
        "issued_at": T0 + timedelta(hours=n),
        "withdrawn_at": None,
        "event_time": T0 + timedelta(hours=n),
        "schema_version": 1,
        "source_ref": f"{REQUESTS}/0#{n}",
    }


def action_event(n: int) -> Row:
    return {
        "event_id": f"ac-{n}",
        "action_id": f"A{n}",
        "request_id": f"R{n}",
        "platform": "twitter",
        "content_id": f"c{n}",
        "action": "REMOVED",
        "jurisdiction": None,
        "acted_at": T0 + timedelta(hours=n + 30),
        "schema_version": 1,
        "source_ref": f"{ACTIONS}/0#{n}",
    }


def request(n: int, *, breached: bool = False) -> Row:
    return {
        "request_id": f"R{n}",
        "event_id": f"rq-{n}",
        "platform": "twitter",
        "content_id": f"c{n}",
        "authority": "Roskomnadzor",
        "authority_kind": "REGULATOR",
        "jurisdiction": "RU",
        "category": "DRUGS",
        "content_type": "POST",
        "legal_basis": "149-FZ art. 15.1",
        "requested_action": "REMOVE",
        "issued_at": T0 + timedelta(hours=n),
        "deadline_at": T0 + timedelta(hours=n + 24),
        "sla_seconds": 86400,
        "sla_rule_id": "RU-149FZ",
        "sla_default_used": False,
        "breached": breached,
        "first_resolved_at": None,
        "withdrawn_at": None,
    }


def transitions(n: int, steps: Sequence[tuple[str, str]]) -> list[Row]:
    return [
        {
            "transition_id": f"R{n}#{seq}",
            "request_id": f"R{n}",
            "seq": seq,
            "transition": transition,
            "transition_at": T0 + timedelta(hours=n + 10 * seq),
            "disposition": disposition,
            "cause_event_id": None if transition == "BREACHED" else f"rq-{n}",
        }
        for seq, (transition, disposition) in enumerate(steps)
    ]


OPENED = ("OPENED", "OPEN")
BREACHED = ("BREACHED", "OPEN")
RESOLVED_LATE = ("RESOLVED_LATE", "RESOLVED_LATE")


def breach(n: int) -> Row:
    return {
        "request_id": f"R{n}",
        "platform": "twitter",
        "category": "DRUGS",
        "authority": "Roskomnadzor",
        "jurisdiction": "RU",
        "deadline_at": T0 + timedelta(hours=n + 24),
        "breached_at": T0 + timedelta(hours=n + 24, milliseconds=1),
        "disposition_at_breach": "OPEN",
        "resolved_at": None,
    }


def backlog(day: int, open_: int) -> Row:
    return {
        "as_of": T0 + timedelta(days=day),
        "category": "DRUGS",
        "platform": "twitter",
        "authority": "Roskomnadzor",
        "open": open_,
        "overdue": 0,
        "declined": 0,
        "unresolved": open_,
    }


def quarantined(n: int) -> Row:
    ref = f"{REQUESTS}/0#{900 + n}"
    return {
        "quarantine_id": ref,
        "topic": REQUESTS,
        "source_ref": ref,
        "reason_code": "TRUNCATED",
        "message": "truncated record",
        "event_id": None,
        "raw_key": b"k",
        "raw_value": b"\x00\x01",
    }


def duplicate(n: int, kept: str | None = None) -> Row:
    return {
        "source_ref": f"{REQUESTS}/0#{800 + n}",
        "topic": REQUESTS,
        "event_id": f"rq-{n}",
        "kept_source_ref": f"{REQUESTS}/0#{n}" if kept is None else kept,
    }


def batch(
    offsets: Mapping[tuple[str, int], tuple[int, int]], **tables: Sequence[Row]
) -> LandingBatch:
    arrow = {
        name: pa.Table.from_pylist(list(rows), schema=SCHEMAS[name])
        for name, rows in tables.items()
    }
    return LandingBatch.covering(offsets, arrow)


def first_batch() -> LandingBatch:
    """Two requests, one acted on, and a row for every audit table."""
    return batch(
        {(REQUESTS, 0): (0, 3), (ACTIONS, 0): (0, 0)},
        request_events=[request_event(1), request_event(2)],
        action_events=[action_event(1)],
        requests=[request(1), request(2)],
        lifecycle_transitions=transitions(1, [OPENED]) + transitions(2, [OPENED]),
        sla_breaches=[],
        backlog_daily=[backlog(0, 2)],
        quarantine=[quarantined(1)],
        duplicate_deliveries=[duplicate(1)],
    )


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[StreamSink]:
    with StreamSink(tmp_path / "audit.duckdb", tmp_path / "snapshot.duckdb", 60.0) as s:
        yield s


def fingerprints(sink: StreamSink) -> dict[str, tuple[int, str]]:
    # A cursor of its own: table_fingerprints leaves a half-read result behind, and
    # DuckDB 2 then refuses `register` on that connection.
    return table_fingerprints(sink._con.cursor())


def rows_of(sink: StreamSink, sql: str) -> list[tuple[Any, ...]]:
    return sink._con.execute(sql).fetchall()


def test_batch_lands_once_and_a_replay_changes_nothing(sink: StreamSink) -> None:
    assert sink.write_batch(first_batch()) is True
    counts = {t: n for t, (n, _) in fingerprints(sink).items()}
    assert counts["request_events"] == 2 and counts["lifecycle_transitions"] == 2
    assert counts["batch_ledger"] == 1 and counts["quarantine"] == 1
    landed = fingerprints(sink)

    assert sink.write_batch(first_batch()) is False
    assert fingerprints(sink) == landed

    # The same rows under another batch id (re-batched offsets): no event is landed twice,
    # derived rows are replaced by equal ones; only the ledger grows.
    regrouped = LandingBatch("regrouped", {(REQUESTS, 0): (0, 3)}, first_batch().tables)
    assert sink.write_batch(regrouped) is True
    after = fingerprints(sink)
    assert after.pop("batch_ledger")[0] == 2
    landed.pop("batch_ledger")
    assert after == landed
    assert rows_of(sink, "SELECT row_counts FROM batch_ledger WHERE batch_id = 'regrouped'") == [
        (
            '{"action_events": 1, "backlog_daily": 1, "duplicate_deliveries": 1, '
            '"lifecycle_transitions": 2, "quarantine": 1, "request_events": 2, '
            '"requests": 2, "sla_breaches": 0}',
        )
    ]


def test_updated_history_replaces_that_request_only(sink: StreamSink) -> None:
    sink.write_batch(first_batch())
    r2_before = rows_of(sink, "SELECT * FROM lifecycle_transitions WHERE request_id = 'R2'")

    # R1 breached and was resolved late: its whole history, now three transitions.
    longer = batch(
        {(REQUESTS, 0): (4, 4), (ACTIONS, 0): (1, 1)},
        requests=[request(1, breached=True)],
        lifecycle_transitions=transitions(1, [OPENED, BREACHED, RESOLVED_LATE]),
        sla_breaches=[breach(1)],
        backlog_daily=[backlog(0, 1), backlog(1, 1)],
    )
    assert sink.write_batch(longer)
    seqs = "SELECT request_id, seq, transition FROM lifecycle_transitions ORDER BY ALL"
    assert rows_of(sink, seqs) == [
        ("R1", 0, "OPENED"),
        ("R1", 1, "BREACHED"),
        ("R1", 2, "RESOLVED_LATE"),
        ("R2", 0, "OPENED"),
    ]
    assert rows_of(sink, "SELECT request_id, breached FROM requests ORDER BY 1") == [
        ("R1", True),
        ("R2", False),
    ]
    assert rows_of(sink, "SELECT day(as_of), open FROM backlog_daily ORDER BY 1") == [
        (1, 1),
        (2, 1),
    ]

    # A shorter history (fewer rows) replaces it too.
    shorter = batch({(REQUESTS, 0): (5, 5)}, lifecycle_transitions=transitions(1, [OPENED]))
    assert sink.write_batch(shorter)
    assert rows_of(sink, seqs) == [("R1", 0, "OPENED"), ("R2", 0, "OPENED")]
    assert rows_of(sink, "SELECT * FROM lifecycle_transitions WHERE request_id = 'R2'") == (
        r2_before
    )
    assert rows_of(sink, "SELECT count(*) FROM sla_breaches") == [(1,)]


def test_a_request_row_carries_its_whole_history(sink: StreamSink) -> None:
    """A late event can undo a breach: the request's new rows come without a breach row,
    and the old one must not survive."""
    sink.write_batch(first_batch())
    breached = batch(
        {(REQUESTS, 0): (4, 4)},
        requests=[request(1, breached=True)],
        lifecycle_transitions=transitions(1, [OPENED, BREACHED]),
        sla_breaches=[breach(1)],
    )
    assert sink.write_batch(breached)
    assert rows_of(sink, "SELECT request_id FROM sla_breaches") == [("R1",)]
    undone = batch(
        {(ACTIONS, 0): (1, 1)},
        requests=[request(1)],
        lifecycle_transitions=transitions(1, [OPENED]),
    )
    assert sink.write_batch(undone)
    assert rows_of(sink, "SELECT count(*) FROM sla_breaches") == [(0,)]
    assert rows_of(sink, "SELECT request_id, seq FROM lifecycle_transitions ORDER BY ALL") == [
        ("R1", 0),
        ("R2", 0),
    ]


def test_failure_midway_leaves_the_database_as_it_was(sink: StreamSink) -> None:
    sink.write_batch(first_batch())
    before = fingerprints(sink)
    # Valid events and derived rows first; the last table (duplicate_deliveries) breaks a
    # NOT NULL constraint, so the others were already inserted when it fails.
    failing = batch(
        {(REQUESTS, 0): (4, 9)},
        request_events=[request_event(3), request_event(4)],
        requests=[request(3), request(1, breached=True)],
        lifecycle_transitions=transitions(1, [OPENED, BREACHED]),
        duplicate_deliveries=[duplicate(5), {**duplicate(6), "topic": None}],
    )
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        sink.write_batch(failing)
    assert fingerprints(sink) == before
    ledger = "SELECT count(*) FROM batch_ledger WHERE batch_id = ?"
    assert sink._con.execute(ledger, [failing.batch_id]).fetchall() == [(0,)]

    # A table with a wrong schema among valid ones, and a repeated key, are refused whole.
    wrong = pa.table({"event_id": ["rq-7"], "request_id": ["R7"]})
    with pytest.raises(ValueError, match="request_events: schema differs"):
        sink.write_batch(
            LandingBatch(
                "wrong", {}, {"requests": failing.tables["requests"], "request_events": wrong}
            )
        )
    with pytest.raises(ValueError, match="several rows for"):
        sink.write_batch(batch({}, requests=[request(3), request(3)]))
    assert fingerprints(sink) == before

    # The connection is usable afterwards, and the failed batch can land once fixed.
    fixed = batch(
        {(REQUESTS, 0): (4, 9)},
        request_events=[request_event(3)],
        duplicate_deliveries=[duplicate(5)],
    )
    assert fixed.batch_id != failing.batch_id  # other rows for the same offsets
    assert sink.write_batch(fixed)
    assert fingerprints(sink)["request_events"][0] == 3


def test_resume_offsets_after_several_batches(tmp_path: Path) -> None:
    database, snapshot = tmp_path / "audit.duckdb", tmp_path / "snapshot.duckdb"
    with StreamSink(database, snapshot, 60.0) as sink:
        assert sink.resume_offsets() == {}
        sink.write_batch(first_batch())  # requests 0..3, actions 0..0
        second = batch({(REQUESTS, 0): (4, 9), (REQUESTS, 1): (0, 4)})
        assert sink.write_batch(second)
        assert sink.write_batch(batch({(ACTIONS, 0): (1, 7)}))
        assert sink.write_batch(batch({(REQUESTS, 1): (5, 5)}))
        assert not sink.write_batch(second)  # a replay: ignored
    expected = {(REQUESTS, 0): 10, (REQUESTS, 1): 6, (ACTIONS, 0): 8}
    # Durable: a restarted writer resumes from the same offsets.
    with StreamSink(database, snapshot, 60.0) as sink:
        assert sink.resume_offsets() == expected
        assert rows_of(sink, "SELECT count(*) FROM batch_ledger") == [(4,)]


def test_batch_id_is_derived_from_offsets_and_rows() -> None:
    a = batch_id_for({(REQUESTS, 0): (0, 9), (ACTIONS, 1): (3, 4)})
    assert a == batch_id_for({(ACTIONS, 1): [(3, 4)], (REQUESTS, 0): [(0, 4), (5, 9)]})
    assert a != batch_id_for({(REQUESTS, 0): (0, 8), (ACTIONS, 1): (3, 4)})
    # Batches without offsets (request histories only) differ by their rows.
    one, two = batch({}, requests=[request(1)]), batch({}, requests=[request(2)])
    assert one.batch_id != two.batch_id
    assert one.batch_id == batch({}, requests=[request(1)]).batch_id


def test_resume_offsets_stop_at_the_first_gap(tmp_path: Path) -> None:
    # Records land out of offset order: 0..3 and 6..9 landed, 4..5 still in flight.
    with StreamSink(tmp_path / "audit.duckdb", tmp_path / "snapshot.duckdb", 60.0) as sink:
        sink.start_run({(REQUESTS, 0): 0, (ACTIONS, 0): 2})
        assert sink.write_batch(batch({(REQUESTS, 0): [(0, 3), (6, 9)], (ACTIONS, 0): (5, 6)}))
        # actions 2..4 are not landed: the first run started there, so that is the gap.
        assert sink.resume_offsets() == {(REQUESTS, 0): 4, (ACTIONS, 0): 2}
        assert sink.write_batch(batch({(REQUESTS, 0): (4, 5), (ACTIONS, 0): (2, 4)}))
        assert sink.resume_offsets() == {(REQUESTS, 0): 10, (ACTIONS, 0): 7}
        # Offsets the broker no longer holds (retention) are not waited for.
        assert sink.resume_offsets({(REQUESTS, 0): 12})[(REQUESTS, 0)] == 12
        assert sink.landed_offsets() == {(REQUESTS, 0): ((0, 9),), (ACTIONS, 0): ((2, 6),)}


def test_a_ledger_of_many_runs_is_read_in_bounded_memory(sink: StreamSink) -> None:
    # One batch covering every other offset of 0..39,998: 20,000 runs, ~1.9 MB of JSON, as
    # a replay's held rows land at its end. Joined against UNNEST, the ledger's JSON text
    # was copied into each run (~37 GB here; a 1M replay was OOM-killed at 20 GB).
    runs = [(n, n) for n in range(0, 40_000, 2)]
    assert sink.write_batch(batch({(REQUESTS, 0): runs}))
    assert rows_of(sink, "SELECT sum(length(offsets)) > 1_500_000 FROM batch_ledger") == [(True,)]
    rows_of(sink, "SET memory_limit = '256MB'")
    assert sink.landed_offsets() == {(REQUESTS, 0): tuple(runs)}
    assert sink.resume_offsets() == {(REQUESTS, 0): 1}
    assert rows_of(sink, "SELECT records_in FROM stream_account") == [(20_000,)]
    assert rows_of(sink, "SELECT count(*), min(first), max(last) FROM batch_ledger_offsets") == [
        (20_000, 0, 39_998)
    ]


def releases(*marks: tuple[int, datetime, int, int]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"request_id": f"R{n}", "watermark": wm, "run": run, "revision": revision}
            for n, wm, run, revision in marks
        ],
        schema=RELEASES_SCHEMA,
    )


def history(
    n: int, steps: Sequence[tuple[str, str]], *mark: Any, breached: bool = False
) -> LandingBatch:
    tables = {
        "requests": pa.Table.from_pylist([request(n, breached=breached)], SCHEMAS["requests"]),
        "lifecycle_transitions": pa.Table.from_pylist(
            transitions(n, steps), SCHEMAS["lifecycle_transitions"]
        ),
    }
    return LandingBatch.covering({}, tables, releases((n, *mark)))


def test_an_older_release_never_replaces_a_newer_one(sink: StreamSink) -> None:
    w1, w2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    steps = "SELECT string_agg(transition, ',' ORDER BY seq) FROM lifecycle_transitions"
    names = {step: step[0] for step in (OPENED, BREACHED, RESOLVED_LATE)}
    assert sink.write_batch(history(1, [OPENED, BREACHED], w2, 1, 2, breached=True))
    # Landing out of order: the release at the earlier watermark is skipped...
    assert sink.write_batch(history(1, [OPENED], w1, 1, 1))
    assert rows_of(sink, steps) == [(f"{names[OPENED]},{names[BREACHED]}",)]
    # ... and so is a lower revision at the same watermark; a higher one lands.
    assert sink.write_batch(history(1, [OPENED], w2, 1, 1))
    assert rows_of(sink, steps) == [(f"{names[OPENED]},{names[BREACHED]}",)]
    assert sink.write_batch(history(1, [OPENED, BREACHED, RESOLVED_LATE], w2, 1, 3))
    assert rows_of(sink, steps) == [(f"{names[OPENED]},{names[BREACHED]},{names[RESOLVED_LATE]}",)]
    # A later run re-releasing the same watermark wins over the earlier run's revisions.
    assert sink.write_batch(history(1, [OPENED, BREACHED], w2, 2, 1, breached=True))
    assert rows_of(sink, steps) == [(f"{names[OPENED]},{names[BREACHED]}",)]
    with pytest.raises(ValueError, match="one row per request"):
        sink.write_batch(LandingBatch.covering({}, {}, releases((1, w2, 3, 1))))


def test_runs_record_where_they_started_and_how_far_they_landed(sink: StreamSink) -> None:
    assert sink.start_run({(REQUESTS, 0): 0}) == 1
    sink.write_batch(LandingBatch.covering({(REQUESTS, 0): (0, 1)}, {}, watermark=T0))
    sink.write_batch(
        LandingBatch.covering({(REQUESTS, 0): (2, 3)}, {}, watermark=T0 - timedelta(days=1))
    )
    assert sink.start_run({(REQUESTS, 0): 4}) == 2
    assert rows_of(sink, "SELECT run, watermark FROM stream_runs ORDER BY run") == [
        (1, T0),  # never moves back
        (2, None),
    ]


def test_snapshot_is_published_on_schedule_and_matches_the_writer(
    sink: StreamSink, tmp_path: Path
) -> None:
    sink.write_batch(first_batch())
    assert sink.maybe_publish_snapshot(now=1000.0) is True  # first call: none published yet
    assert sink.maybe_publish_snapshot(now=1059.0) is False
    assert sink.maybe_publish_snapshot(now=1060.0) is True
    auditor = connect_auditor(sink.snapshot)
    assert table_fingerprints(auditor) == fingerprints(sink)
    # Views and macros come along.
    assert auditor.execute("SELECT count(*) FROM request_status_current").fetchall() == [(2,)]
    assert auditor.execute(
        "SELECT count(*) FROM request_status_as_of(TIMESTAMPTZ '2021-02-01 01:30:00')"
    ).fetchall() == [(1,)]
    auditor.close()
    # No temporary copy is left behind.
    assert {p.name for p in tmp_path.iterdir()} <= {
        "audit.duckdb",
        "audit.duckdb.wal",
        "snapshot.duckdb",
    }


# A separate auditor process: opens the snapshot afresh each time, counts landed batches
# and rows, checks the views, and finally tries to write.
READER = """
import sys, time
from pathlib import Path
import duckdb
from connectors.duckdb_reader import connect_auditor

snapshot, seen, reads, deadline = Path(sys.argv[1]), set(), 0, time.monotonic() + 15
while (len(seen) < 5 or reads < 30) and time.monotonic() < deadline:
    con = connect_auditor(snapshot)
    (batches,) = con.execute("SELECT count(*) FROM batch_ledger").fetchone()
    (events,) = con.execute("SELECT count(*) FROM request_events").fetchone()
    (status,) = con.execute("SELECT count(*) FROM request_status_current").fetchone()
    con.close()
    assert events == status == 2 * batches, (batches, events, status)
    seen.add(batches)
    reads += 1
    print(batches, flush=True)
    time.sleep(0.01)
con = connect_auditor(snapshot)
try:
    con.execute("INSERT INTO batch_ledger VALUES ('x', '[]', '{}', now())")
except duckdb.Error as e:
    print("refused:", e)
"""


def numbered(k: int) -> LandingBatch:
    """Batch k: two new requests, each with its event and history."""
    n = [2 * k, 2 * k + 1]
    return batch(
        {(REQUESTS, 0): (2 * k, 2 * k + 1)},
        request_events=[request_event(i) for i in n],
        requests=[request(i) for i in n],
        lifecycle_transitions=[t for i in n for t in transitions(i, [OPENED])],
    )


def test_auditor_process_reads_snapshots_while_the_writer_writes(tmp_path: Path) -> None:
    with StreamSink(tmp_path / "audit.duckdb", tmp_path / "snapshot.duckdb", 0.02) as sink:
        sink.write_batch(numbered(0))
        sink.publish_snapshot()
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(sink.snapshot)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        k = 1
        while reader.poll() is None and k < 5000:
            sink.write_batch(numbered(k))
            sink.maybe_publish_snapshot()
            k += 1
        out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    *counts, refusal = out.splitlines()
    batches = [int(c) for c in counts]
    assert batches == sorted(batches)
    assert len(batches) >= 30 and len(set(batches)) >= 5, batches
    assert refusal.startswith("refused:") and "read-only" in refusal


def _deliveries(sink: StreamSink) -> list[tuple[Any, ...]]:
    return rows_of(
        sink,
        "SELECT source_ref, 'event' FROM request_events UNION ALL "
        "SELECT source_ref, 'duplicate of ' || kept_source_ref FROM duplicate_deliveries "
        "ORDER BY 1",
    )


def test_runs_that_kept_different_copies_still_account_each_position_once(
    sink: StreamSink,
) -> None:
    # Copies of rq-1 at positions 1 and 801. A killed run landed only its duplicate row
    # (801 kept, 1 the repeat); the next run keeps 1 and lands it with 801 as the repeat.
    at_1, at_801 = f"{REQUESTS}/0#1", f"{REQUESTS}/0#801"
    assert sink.write_batch(
        batch(
            {(REQUESTS, 0): (1, 1)},
            duplicate_deliveries=[{**duplicate(1), "source_ref": at_1, "kept_source_ref": at_801}],
        )
    )
    assert sink.write_batch(
        batch(
            {(REQUESTS, 0): [(1, 1), (801, 801)]},
            request_events=[request_event(1)],
            duplicate_deliveries=[duplicate(1)],  # 801, kept 1
        )
    )
    assert _deliveries(sink) == [(at_1, "event"), (at_801, f"duplicate of {at_1}")]
    # And the other way: an event row for a position other than the landed copy's is a
    # repeat of it.
    again = {**request_event(1), "source_ref": f"{REQUESTS}/0#900"}
    assert sink.write_batch(batch({(REQUESTS, 0): (900, 900)}, request_events=[again]))
    assert _deliveries(sink)[-1] == (f"{REQUESTS}/0#900", f"duplicate of {at_1}")
    assert len(_deliveries(sink)) == 3


def test_publishing_a_snapshot_removes_the_pins_of_dead_readers(
    sink: StreamSink, tmp_path: Path
) -> None:
    """A reader killed while connecting leaves its pin (a link to a whole copy) beside the
    snapshot; the writer's next publication removes it, though no reader comes."""
    sink.write_batch(first_batch())
    sink.publish_snapshot()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f".snapshot.duckdb.reader-{int(gone.stdout)}-0badc0de"
    dead.mkdir()
    os.link(sink.snapshot, dead / "snapshot.duckdb")
    live = tmp_path / f".snapshot.duckdb.reader-{os.getpid()}-0000beef"
    live.mkdir()
    sink.publish_snapshot()
    assert not dead.exists()
    assert live.exists()

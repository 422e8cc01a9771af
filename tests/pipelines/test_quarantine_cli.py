"""`removal-audit quarantine`: summary, show and replay over a real DuckDB file opened
read-only; replays land on the real broker with their replay-of header.

The quarantine rows are intake's own output: early-2021 events refused as too old under a
stricter rule than today's defaults (so today's intake accepts them: "a changed rule"),
truncated bytes (refused under any rule), a record quarantined from an Avro file, and one
whose event_id another delivery has landed since.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from kafka import KafkaAdminClient

from connectors.avro_files import RawMessage
from connectors.duckdb_sink import connect_writer
from connectors.kafka_publish import PublishSettings, ensure_topics
from connectors.origin import SourceRef
from connectors.quarantine_topic import HEADER_REPLAY_OF
from connectors.schema_store import SchemaStore
from pipelines.cli import main
from pipelines.intake import Accepted, IntakeRules, take_in
from pipelines.rows import SCHEMAS, Row, event_row
from tests.conftest import held_by_writer, message, request
from tests.connectors.test_quarantine_topic import land, quarantined, read_topic

TOPICS = ("removal.requests", "removal.actions")


@pytest.fixture(autouse=True)
def default_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Today's rules are the defaults: no REMOVAL_AUDIT_* variable, no .env file."""
    import os

    for name in list(os.environ):
        if name.startswith("REMOVAL_AUDIT_") and name != "REMOVAL_AUDIT_KAFKA_BOOTSTRAP":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class Audit:
    """A database with five quarantined records (see the module docstring)."""

    def __init__(self, directory: Path, store: SchemaStore) -> None:
        self.prefix = f"c{uuid.uuid4().hex[:8]}."
        self.db = directory / "audit.duckdb"
        kafka = f"{self.prefix}removal.requests"
        old = message(store, request(1))
        truncated = message(store, request(2))
        truncated = RawMessage(truncated.topic, truncated.key, truncated.value[:-4])
        self.too_old = f"{kafka}/0#3"
        self.truncated = (f"{kafka}/0#9", f"{kafka}/0#10")
        self.from_file = "requests.avro#7"
        self.landed = f"{kafka}/1#4"
        rows = quarantined(
            store,
            [
                (SourceRef.parse(self.too_old), old),
                (SourceRef.parse(self.truncated[0]), truncated),
                (SourceRef.parse(self.truncated[1]), truncated),
                (SourceRef.parse(self.from_file), message(store, request(3))),
                (SourceRef.parse(self.landed), message(store, request(4))),
            ],
        )
        self.rows = {row["quarantine_id"]: row for row in rows}
        # rq-4 arrived again later and was accepted (today's rules): it is landed.
        again = take_in(message(store, request(4)), SourceRef(f"{kafka}/2", 8), store, TODAY)
        assert isinstance(again, Accepted)
        con = connect_writer(self.db)
        try:
            land(con, rows)
            _land_events(con, [event_row(again)])
        finally:
            con.close()


TODAY = IntakeRules(
    now=None,
    max_clock_skew_seconds=300,
    oldest_plausible=datetime(2000, 1, 1, tzinfo=UTC),  # the settings' default
    max_message_bytes=1_048_576,
)


def _land_events(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    con.register("staged_events", pa.Table.from_pylist(rows, schema=SCHEMAS["request_events"]))
    con.execute("INSERT INTO request_events BY NAME SELECT * FROM staged_events")
    con.unregister("staged_events")


@pytest.fixture
def quarantine_db(tmp_path: Path, store: SchemaStore) -> Audit:
    return Audit(tmp_path, store)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["quarantine", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def table_cells(out: str) -> list[list[str]]:
    """The rows of a print_table output (its cells are separated by 2+ spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    found = []
    for line in lines[start + 1 :]:
        if line.startswith("("):
            break
        found.append(re.split(r"\s{2,}", line.strip()))
    return found


def table_rows(out: str) -> dict[str, list[str]]:
    """{quarantine_id: cells} of a replay's table."""
    return {cells[0]: cells for cells in table_cells(out)}


def test_summary_counts_by_topic_and_reason_with_first_and_last_positions(
    quarantine_db: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "summary", "--db", str(quarantine_db.db))
    assert status == 0
    assert out.splitlines()[0] == "5 quarantined records, 0 of them on the quarantine topic"
    rows = {(cells[0], cells[1]): cells[2:] for cells in table_cells(out)}
    assert rows == {
        # Offsets compare as numbers: #9 comes before #10.
        ("removal.requests", "TRUNCATED"): ["2", "0", *quarantine_db.truncated],
        ("removal.requests", "TIMESTAMP_TOO_OLD"): [
            "3",
            "0",
            quarantine_db.too_old,
            quarantine_db.from_file,
        ],
    }


def test_show_prints_every_field_the_bytes_and_what_intake_says_now(
    quarantine_db: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "show", quarantine_db.too_old, "--db", str(quarantine_db.db))
    assert status == 0
    row = quarantine_db.rows[quarantine_db.too_old]
    fields = dict(
        (line[:14].strip(), line[15:]) for line in out.splitlines() if not line.startswith("  ")
    )
    assert fields["quarantine_id"] == fields["source_ref"] == quarantine_db.too_old
    assert fields["topic"] == "removal.requests"
    assert fields["reason_code"] == "TIMESTAMP_TOO_OLD"
    assert fields["message"] == row["message"] and "before 2021-06-01" in row["message"]
    assert fields["event_id"] == "rq-1"
    assert fields["forwarded"] == "no"
    assert re.fullmatch(r"ACCEPTED: request event rq-1, schema v\d+", fields["intake now"])
    assert fields["raw_key"] == f"{len(row['raw_key'])} bytes"
    assert fields["raw_value"] == f"{len(row['raw_value'])} bytes"
    # The hex dump gives back the exact bytes.
    dumped = out.split("raw_value")[1].splitlines()[1:]
    assert bytes.fromhex("".join(line[12:59] for line in dumped)) == row["raw_value"]

    status, out, _ = run(capsys, "show", quarantine_db.truncated[0], "--db", str(quarantine_db.db))
    assert status == 0
    assert re.search(r"^intake now +TRUNCATED: ", out, re.MULTILINE)

    status, out, err = run(capsys, "show", "removal.requests/0#404", "--db", str(quarantine_db.db))
    assert status == 2 and out == "" and "no quarantined record" in err


def test_replay_dry_run_judges_with_the_current_rules(
    quarantine_db: Audit, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 1: a dry run must not need the broker.
    dry = (
        "replay",
        "--dry-run",
        "--db",
        str(quarantine_db.db),
        "--bootstrap-servers",
        "127.0.0.1:1",
    )
    target = f"{quarantine_db.prefix}removal.requests"

    # Under the rule that refused them, the old events are still refused.
    monkeypatch.setenv("REMOVAL_AUDIT_OLDEST_PLAUSIBLE", "2021-06-01T00:00:00Z")
    status, out, _ = run(capsys, *dry, "--topic-prefix", quarantine_db.prefix)
    assert status == 0
    assert table_rows(out)[quarantine_db.too_old][2] == "TIMESTAMP_TOO_OLD"
    assert out.splitlines()[-1].startswith("dry run: 0 of 5 would be replayed, 5 still refused")

    # Today's rules (the defaults) accept them.
    monkeypatch.delenv("REMOVAL_AUDIT_OLDEST_PLAUSIBLE")
    status, out, _ = run(capsys, *dry, "--topic-prefix", quarantine_db.prefix)
    assert status == 0
    rows = table_rows(out)
    assert set(rows) == set(quarantine_db.rows)
    assert rows[quarantine_db.too_old][1:4] == ["TIMESTAMP_TOO_OLD", "ACCEPTED", target]
    for truncated in quarantine_db.truncated:
        assert rows[truncated][1:4] == ["TRUNCATED", "TRUNCATED", "-"]
    assert rows[quarantine_db.landed][1:4] == ["TIMESTAMP_TOO_OLD", "ALREADY_LANDED", "-"]
    assert f"already landed (from {target}/2#8)" in rows[quarantine_db.landed][4]
    assert rows[quarantine_db.from_file][1:4] == ["TIMESTAMP_TOO_OLD", "ACCEPTED", "-"]
    assert f"--include-files sends it to {target}" in rows[quarantine_db.from_file][4]
    assert out.splitlines()[-1] == (
        "dry run: 1 of 5 would be replayed, 3 still refused; "
        "1 accepted but from a file, not sent; nothing produced"
    )

    # Selection by reason or id (either); another prefix is named beside the source topic.
    status, out, _ = run(
        capsys,
        *dry,
        "--reason",
        "TRUNCATED",
        "--id",
        quarantine_db.too_old,
        "--topic-prefix",
        "other.",
    )
    rows = table_rows(out)
    assert set(rows) == {quarantine_db.too_old, *quarantine_db.truncated}
    assert rows[quarantine_db.too_old][3] == "other.removal.requests"
    assert rows[quarantine_db.too_old][4].endswith(f"; read from {target}")

    status, _, err = run(capsys, *dry, "--id", "nowhere#1")
    assert status == 2 and "no quarantined record 'nowhere#1'" in err


@pytest.mark.kafka
def test_replay_sends_what_intake_now_accepts_back_to_its_source_topic(
    quarantine_db: Audit,
    capsys: pytest.CaptureFixture[str],
    kafka_bootstrap: str,
    store: SchemaStore,
) -> None:
    ensure_topics(
        PublishSettings(kafka_bootstrap, topic_prefix=quarantine_db.prefix),
        [quarantine_db.prefix + t for t in TOPICS],
    )
    kafka = ("--db", str(quarantine_db.db), "--bootstrap-servers", kafka_bootstrap)
    status, out, err = run(capsys, "replay", *kafka, "--topic-prefix", quarantine_db.prefix)
    assert status == 0, err
    assert out.splitlines()[-1] == (
        "replayed 1 of 5 (header removal-audit.replay-of), 3 still refused; "
        "1 accepted but from a file, not sent"
    )
    requests = quarantine_db.prefix + "removal.requests"
    (record,) = read_topic(kafka_bootstrap, requests)
    row = quarantine_db.rows[quarantine_db.too_old]
    assert (record.key, record.value) == (row["raw_key"], row["raw_value"])
    assert record.headers == [(HEADER_REPLAY_OF, quarantine_db.too_old.encode())]
    assert (
        table_rows(out)[quarantine_db.too_old][3]
        == f"{requests}/{record.partition}#{record.offset}"
    )
    assert read_topic(kafka_bootstrap, quarantine_db.prefix + "removal.actions") == []
    # What went back is what the streaming job will now accept.
    raw = RawMessage("removal.requests", record.key, record.value)
    assert isinstance(take_in(raw, SourceRef(requests, 0), store, TODAY), Accepted)

    # A record quarantined from a file goes only when asked, to the same topic.
    status, out, err = run(
        capsys,
        "replay",
        *kafka,
        "--topic-prefix",
        quarantine_db.prefix,
        "--include-files",
        "--id",
        quarantine_db.from_file,
    )
    assert status == 0, err
    records = read_topic(kafka_bootstrap, requests)
    assert sorted(r.headers[0][1].decode() for r in records) == sorted(
        [quarantine_db.too_old, quarantine_db.from_file]
    )
    replayed = next(r for r in records if r.headers == [(HEADER_REPLAY_OF, b"requests.avro#7")])
    assert replayed.value == quarantine_db.rows[quarantine_db.from_file]["raw_value"]


@pytest.mark.kafka
def test_replay_creates_no_topic_and_produces_nothing_when_one_is_missing(
    quarantine_db: Audit, capsys: pytest.CaptureFixture[str], kafka_bootstrap: str
) -> None:
    elsewhere = f"m{uuid.uuid4().hex[:8]}."
    status, out, err = run(
        capsys,
        "replay",
        "--db",
        str(quarantine_db.db),
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic-prefix",
        elsewhere,
    )
    assert status == 1 and out == ""
    assert f"no such topic: {elsewhere}removal.requests" in err and "nothing was produced" in err
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(elsewhere)]
    finally:
        admin.close()


def test_a_database_its_writer_holds_points_to_the_snapshot(
    quarantine_db: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    with held_by_writer(quarantine_db.db):
        status, out, err = run(capsys, "summary", "--db", str(quarantine_db.db))
        assert status == 2 and out == ""
        assert f"--db {quarantine_db.db.with_name('audit.snapshot.duckdb')}" in err

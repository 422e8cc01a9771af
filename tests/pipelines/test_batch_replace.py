"""A batch load replaces the audit tables and everything derived from them, and keeps
history with the load it belongs to: the seed's files, then three new events, then the
seed's files again, into one real DuckDB file, a real webhook receiver listening."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from connectors.duckdb_metrics import read_metrics
from connectors.duckdb_reader import connect_auditor
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.cli import main
from pipelines.settings import Settings
from tests.conftest import WriteFiles, message, read_rows, request
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def _alerts_all(database: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["alerts", "--all", "--db", str(database)]) == 0
    return out.getvalue()


def test_a_load_replaces_the_alerts_and_the_account_with_the_tables(
    demo: tuple[Settings, str],
    tmp_path: Path,
    store: SchemaStore,
    write_files: WriteFiles,
) -> None:
    database = tmp_path / "audit.duckdb"
    seed = [demo[0].data_dir / "requests.avro", demo[0].data_dir / "actions.avro"]
    # Three requests in the first hours of a day: no midnight passed since the first one.
    new = write_files(
        tmp_path / "new",
        [message(store, request(n, content=f"c{n}", hours=n)) for n in (1, 2, 3)],
        [],
    )
    receiver = Receiver()
    try:
        settings = Settings(
            database=database,
            alert_webhook_url=receiver.url,
            alert_notify_history_days=10_000,  # every seed episode is notified
            quality_gate=False,
        )
        first = run_batch(seed, settings)
        assert first.alerts.startswith("alerts through 2021-04-30: 7 fired, 7 resolved")
        assert len(receiver.delivered()) == 14

        second = run_batch(new, settings)
        assert (
            second.alerts
            == "alerts: nothing to evaluate yet (the data does not reach 2021-02-02 yet)"
        )
        assert read_rows(database, "SELECT count(*) FROM requests") == [(3,)]
        assert _alerts_all(database) == "no alert episode recorded\n"
        for table in ("alerts", "alert_tracks", "alert_evaluations"):
            assert read_rows(database, f"SELECT count(*) FROM {table}") == [(0,)], table
        # What receivers were told stays, with the load that told them.
        assert read_rows(
            database,
            "SELECT run_id, count(*), count(delivered_at) FROM alert_notifications GROUP BY ALL",
        ) == [(first.run_id, 14, 14)]
        assert read_rows(database, "SELECT run_id, records_in FROM record_account") == [
            (second.run_id, 3)
        ]
        assert read_rows(database, "SELECT count(*) FROM load_ledger") == [(2,)]  # the history

        third = run_batch(seed, settings)  # a replay: the seed's episodes are back, unsent
        assert third.replayed and third.run_id == first.run_id
        assert third.alerts.startswith("alerts through 2021-04-30: 7 fired, 7 resolved")
        assert _alerts_all(database).count("(resolved ") == 7
        assert len(receiver.delivered()) == 14
        assert read_rows(database, "SELECT run_id, records_in FROM record_account") == [
            (first.run_id, first.records_in)
        ]
        # On-call's figures describe the tables too, not the load landed last the first time.
        con = connect_auditor(database)
        try:
            assert read_metrics(con).records_in == first.records_in
        finally:
            con.close()
    finally:
        receiver.close()

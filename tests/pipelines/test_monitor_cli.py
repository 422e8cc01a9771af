"""`removal-audit monitor` and the Prometheus exposition: the served figures are the
database's, --once --as-of gives the published ones, the database is only read, a replaced
snapshot is picked up, a missing one keeps the last figures, SIGTERM/SIGINT stop it."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connectors.duckdb_metrics import AlertsFiring, LabelFigures, MetricsState, PartitionLag
from connectors.duckdb_sink import connect_writer
from pipelines.cli import main
from pipelines.metrics import SAMPLE_NAMES, AuditCollector, serve_metrics
from tests.conftest import read_rows
from tests.ports import free_port
from tests.streaming_job import cli

P = "removal_audit_"
Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    """Sample name -> [(labels, value)] of an exposition text."""
    found: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name].append((s.labels, s.value))
    return found


def total(found: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in found[name] if match.items() <= labels.items())


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return samples(response.read().decode("utf-8"))


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


class Monitor:
    """`removal-audit monitor` in a subprocess, on a free port of 127.0.0.1."""

    def __init__(self, database: Path, log: Path, *, refresh: float) -> None:
        self.port, self.log = free_port(), log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                cli(
                    *("monitor", "--db", str(database)),
                    *("--port", str(self.port), "--refresh", str(refresh)),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for(self, done: str, budget_s: float = 20.0) -> Samples:
        """Scrape until a sample named `done` is exposed."""
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                found = scrape(self.port)
            except (urllib.error.URLError, ConnectionError):
                found = Samples()
            if found.get(done):
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {done} within {budget_s} s:\n{self.log.read_text()}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_monitor_serves_the_database_figures_read_only(audit_path: Path, tmp_path: Path) -> None:
    before = fingerprint(audit_path)
    monitor = Monitor(audit_path, tmp_path / "monitor.log", refresh=0.5)
    try:
        found = monitor.wait_for(P + "unresolved_requests")
        time.sleep(1.2)  # a couple of refreshes: reading again changes nothing
        assert scrape(monitor.port) == found
        assert monitor.stop(signal.SIGTERM) == 0
    finally:
        monitor.kill()
    assert f"http://127.0.0.1:{monitor.port}/metrics" in monitor.log.read_text()
    assert fingerprint(audit_path) == before
    assert not audit_path.with_name(audit_path.name + ".wal").exists()

    horizon = "(SELECT horizon FROM data_horizon)"
    expected = {
        "unresolved_requests": f"SELECT count(*) FROM request_status_as_of({horizon}) "
        "WHERE unresolved",
        "requests_issued_total": f"SELECT count(*) FROM request_status_as_of({horizon})",
        # The batch path also records breaches due after the last event (4 on the seed):
        # not breached yet as of the horizon.
        "sla_breaches_total": f"SELECT count(*) FROM sla_breaches WHERE breached_at <= {horizon}",
        "records_in_total": "SELECT records_in FROM load_ledger",
        "records_landed_total": "SELECT (SELECT count(*) FROM request_events) + "
        "(SELECT count(*) FROM action_events)",
        "records_duplicate_total": "SELECT count(*) FROM duplicate_deliveries",
        "records_quarantined_total": "SELECT count(*) FROM quarantine",
        "data_horizon_timestamp_seconds": f"SELECT epoch({horizon})",
        "as_of_timestamp_seconds": f"SELECT epoch({horizon})",
        "last_landed_timestamp_seconds": "SELECT epoch(max(loaded_at)) FROM load_ledger",
    }
    for name, sql in expected.items():
        assert total(found, P + name) == pytest.approx(read_rows(audit_path, sql)[0][0]), name
    assert total(found, P + "records_in_total") == 63_281
    overdue = f"SELECT category, count(*) FROM request_status_as_of({horizon}) WHERE status = "
    for category, n in read_rows(audit_path, overdue + "'OVERDUE' GROUP BY 1"):
        assert total(found, P + "backlog_requests", category=category, status="overdue") == n
    assert found[P + "build_info"] == [({"version": version("removal-audit")}, 1.0)]


def test_a_missing_database_keeps_the_last_figures_and_a_replaced_one_is_picked_up(
    audit_path: Path, tmp_path: Path
) -> None:
    replacement = tmp_path / "next.duckdb"
    shutil.copy(audit_path, replacement)
    con = connect_writer(replacement)
    try:
        con.execute(
            "INSERT INTO batch_holds (batch_id, path, validation_id, failed_suites, held_at, "
            "status) VALUES ('b-1', 'stream', 'v-1', 'requests', now(), 'HELD')"
        )
        con.execute("DELETE FROM quarantine WHERE reason_code = 'TRUNCATED'")
    finally:
        con.close()
    monitor = Monitor(audit_path, tmp_path / "monitor.log", refresh=0.3)
    try:
        first = monitor.wait_for(P + "batches_held")
        assert total(first, P + "batches_held") == 0
        audit_path.unlink()
        time.sleep(1.0)
        assert scrape(monitor.port) == first  # logged, the last figures kept
        replacement.replace(audit_path)
        deadline = time.monotonic() + 10
        while total(found := scrape(monitor.port), P + "batches_held") == 0:
            assert time.monotonic() < deadline, monitor.log.read_text()
            time.sleep(0.2)
        assert total(found, P + "records_quarantined_total", reason="TRUNCATED") == 0
        assert total(found, P + "records_quarantined_total") == 15
        assert monitor.stop(signal.SIGINT) == 0
    finally:
        monitor.kill()
    assert "cannot open" in monitor.log.read_text()


def test_once_as_of_prints_the_published_figures(
    audit_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["monitor", "--db", str(audit_path), "--once", "--as-of", "2021-03-01T00:00:00Z"])
    assert status == 0
    found = samples(capsys.readouterr().out)
    unresolved = P + "unresolved_requests"
    assert total(found, unresolved) == 2_862
    assert total(found, unresolved, category="SUICIDE_PROMOTION") == 2_336
    assert total(found, unresolved, category="CHILD_SEXUAL_ABUSE_MATERIAL") == 352
    assert total(found, unresolved, category="DRUGS") == 174
    assert total(found, P + "requests_issued_total") > 28_000
    assert (
        total(found, P + "as_of_timestamp_seconds") == datetime(2021, 3, 1, tzinfo=UTC).timestamp()
    )
    for labels, value in found[unresolved]:
        assert total(found, P + "backlog_requests", **labels) == value
    statuses = {labels["status"] for labels, _ in found[P + "backlog_requests"]}
    assert statuses == {"open", "overdue", "declined"}


def test_once_on_a_missing_database_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", "--db", str(tmp_path / "none.duckdb"), "--once"]) == 2
    assert "no audit database" in capsys.readouterr().err


def full_state() -> MetricsState:
    moment = datetime(2021, 3, 1, tzinfo=UTC)
    return MetricsState(
        as_of=moment,
        horizon=moment,
        last_landed_at=moment,
        requests=(LabelFigures("DRUGS", "twitter", "Roskomnadzor", 10, 1, 2, 3, 8, 4),),
        records_in=12,
        landed=10,
        duplicates=1,
        quarantined=(("TRUNCATED", 1),),
        alerts_firing=(AlertsFiring("backlog_spike", "warning", 1),),
        batches_held=1,
        notifications_pending=(("kafka", 2),),
        consumer_lag=(PartitionLag("removal.requests", 0, 5),),
    )


def test_the_exposition_has_every_contract_name_and_no_other() -> None:
    collector = AuditCollector()
    before = samples(generate_latest(collector.registry).decode())
    assert before == {P + "build_info": [({"version": version("removal-audit")}, 1.0)]}
    collector.update(full_state())
    found = samples(generate_latest(collector.registry).decode())
    assert set(found) == SAMPLE_NAMES
    assert found[P + "consumer_lag_records"] == [
        ({"topic": "removal.requests", "partition": "0"}, 5)
    ]
    assert total(found, P + "backlog_requests", status="declined") == 3
    assert total(found, P + "deadlines_due_total") == 8


def test_serve_metrics_binds_the_host_asked_and_closes() -> None:
    collector = AuditCollector()
    collector.update(full_state())
    server = serve_metrics("127.0.0.1", 0, collector)
    try:
        assert server.port > 0 and server.server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        assert total(scrape(server.port), P + "records_in_total") == 12
    finally:
        server.close()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(server.port)

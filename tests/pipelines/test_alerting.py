"""The alert rules on the seed scenario and on hand-made series: the March 2021 surge fires
BacklogSpike for suicide promotion at its event time and nothing fires in the steady
years; evaluating day by day gives the episodes one evaluation does; `for_days` and
`keep_firing_for_days` hold back flapping; a bad rules file is refused by name."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from connectors.duckdb_sink import connect_writer
from pipelines.alert_rules import AlertRule, AlertRules, AlertRulesError, RuleKind
from pipelines.alerting import Figures, day_range, evaluate
from pipelines.batch import run_batch
from pipelines.monitoring import AlertMonitor
from pipelines.settings import Settings
from tests.streaming_job import cli
from tests.webhook_receiver import Receiver

SUICIDE = '{"authority": "Roskomnadzor", "category": "SUICIDE_PROMOTION", "platform": "twitter"}'


@pytest.fixture
def audit(audit: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """conftest's writable copy of the seed's batch database, alerts cleared (the load
    evaluated them)."""
    for table in ("alerts", "alert_notifications", "alert_tracks", "alert_evaluations"):
        audit.execute(f"DELETE FROM {table}")
    return audit


def _episodes(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, datetime, datetime | None]]:
    return con.execute(
        "SELECT rule, labels, fired_at, resolved_at FROM alerts ORDER BY fired_at, rule, labels"
    ).fetchall()


def test_the_march_2021_surge_fires_a_suicide_promotion_spike_and_quiet_years_none(
    audit: duckdb.DuckDBPyConnection,
) -> None:
    outcome = AlertMonitor(AlertRules.load(), sinks=("webhook",)).evaluate(audit)
    assert outcome.evaluated_through == date(2021, 4, 30)
    episodes = _episodes(audit)
    spikes = [
        (labels, fired, resolved)
        for rule, labels, fired, resolved in episodes
        if rule == "BacklogSpike"
    ]
    march = [(f, r) for labels, f, r in spikes if labels == SUICIDE]
    assert march == [(datetime(2021, 3, 4, tzinfo=UTC), datetime(2021, 3, 14, tzinfo=UTC))], (
        "the surge began on 1 March; the weekly growth passed 100 (z 4.4) on the 4th"
    )
    # No spike alert in the steady years, for any category; the other 2021 spike is the
    # burst of protest calls the scenario plans for late January.
    assert all(fired >= datetime(2021, 1, 1, tzinfo=UTC) for _, fired, _ in spikes)
    assert {json.loads(labels)["category"] for labels, _, _ in spikes} == {
        "SUICIDE_PROMOTION",
        "UNAUTHORISED_PROTEST",
    }
    # The evidence carries the numbers behind it.
    (evidence,) = audit.execute(
        "SELECT evidence FROM alerts WHERE rule = 'BacklogSpike' AND labels = ?", [SUICIDE]
    ).fetchall()[0]
    fired = json.loads(evidence)["fired"]
    assert (fired["unresolved"], fired["growth"], fired["unresolved_at_window_start"]) == (
        2429,
        114,
        2315,
    )
    assert fired["z"] >= 4.0 and fired["by"] == ["sigma"]
    # One episode per rule and label set at a time.
    by_track: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = {}
    for rule, labels, fired_at, resolved_at in episodes:
        by_track.setdefault((rule, labels), []).append((fired_at, resolved_at))
    for spans in by_track.values():
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end is not None and end <= start
    # All of it is history by the time the load saw it: recorded, not notified.
    assert outcome.silent == outcome.fired
    assert audit.execute("SELECT count(*) FROM alert_notifications").fetchall() == [(0,)]


def test_evaluating_day_by_day_gives_the_episodes_of_one_evaluation(
    audit: duckdb.DuckDBPyConnection,
) -> None:
    monitor = AlertMonitor(AlertRules.load(), sinks=("kafka", "webhook"), notify_history_days=60)
    monitor.evaluate(audit)
    once = _episodes(audit)
    notified_once = audit.execute("SELECT count(*) FROM alert_notifications").fetchall()
    for table in ("alerts", "alert_notifications", "alert_tracks", "alert_evaluations"):
        audit.execute(f"DELETE FROM {table}")
    # Steps of 1 to 40 days (under the 60 days of notify_history_days), as snapshots of a
    # streaming job would come.
    day, step = date(2016, 12, 20), 1
    while day < date(2021, 4, 30):
        day = min(day + timedelta(days=step), date(2021, 4, 30))
        monitor.evaluate(audit, day)
        step = step % 40 + 7
    assert _episodes(audit) == once
    # Evaluated as it happened (a few days at a time), every episode is notified, firing
    # and resolved, on both sinks: none is history when it is seen.
    rows = audit.execute(
        "SELECT status, sink, count(*) FROM alert_notifications GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    episodes = len(once)
    resolved = sum(1 for *_, r in once if r is not None)
    assert rows == [
        ("firing", "kafka", episodes),
        ("firing", "webhook", episodes),
        ("resolved", "kafka", resolved),
        ("resolved", "webhook", resolved),
    ]
    assert notified_once[0][0] < sum(r[2] for r in rows)


def _overdue_rule(**changes: int) -> AlertRule:
    base = {"for_days": 1, "keep_firing_for_days": 1, **changes}
    return AlertRule(
        name="OverdueHigh",
        kind=RuleKind.OVERDUE,
        severity="warning",
        by=("category",),
        summary="{overdue} overdue {category}",
        runbook="look",
        threshold=10,
        **base,
    )


def _series(overdue_by_day: list[int], first: date) -> dict[tuple[str, str, str], Figures]:
    figures = Figures(
        backlog={first + timedelta(days=i): (v, v) for i, v in enumerate(overdue_by_day)}
    )
    return {("DRUGS", "p", "a"): figures}


@pytest.mark.parametrize(
    ("for_days", "keep", "expected"),
    [
        (1, 1, [("fired", 1), ("resolved", 2), ("fired", 3), ("resolved", 4)]),
        (2, 1, []),  # never two days in a row above the threshold
        (1, 2, [("fired", 1), ("resolved", 5)]),  # one quiet day in between does not resolve
    ],
)
def test_for_and_keep_firing_for_hold_back_flapping(
    for_days: int, keep: int, expected: list[tuple[str, int]]
) -> None:
    first = date(2021, 1, 1)
    values = [0, 12, 9, 15, 0, 0, 0, 0, 0]  # threshold 10
    rule = _overdue_rule(for_days=for_days, keep_firing_for_days=keep)
    days = day_range(first, first + timedelta(days=len(values) - 1))
    result = evaluate([rule], _series(values, first), {}, days, first)
    assert [(t.kind, (t.day - first).days) for t in result.transitions] == expected
    if expected:
        assert result.transitions[0].summary == "12 overdue DRUGS"


def test_a_track_steps_the_same_split_or_whole() -> None:
    first = date(2021, 1, 1)
    values = [0, 12, 13, 0, 0, 15, 16, 17, 0, 0, 0, 11]
    series = _series(values, first)
    rule = _overdue_rule(keep_firing_for_days=2)
    days = day_range(first, first + timedelta(days=len(values) - 1))
    whole = evaluate([rule], series, {}, days, first)
    tracks: dict = {}
    pieces = []
    for chunk in (days[:2], days[2:3], days[3:7], days[7:]):
        part = evaluate([rule], series, tracks, chunk, first)
        tracks = part.tracks
        pieces += part.transitions
    assert pieces == whole.transitions
    assert [t.kind for t in whole.transitions] == [
        "fired",
        "resolved",
        "fired",
        "resolved",
        "fired",
    ]
    assert len({t.alert_id for t in whole.transitions}) == 3


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kind", '"spike"', "kind must be one of"),
        ("by", '["country"]', "by must name distinct labels"),
        ("threshold", "0", "threshold must be >= 1"),
        ("treshold", "500", "keys ['treshold'] are not used"),
        ("severity", '"page"', "severity must be one of"),
        ("for_days", '"2"', "for_days must be an integer"),
    ],
)
def test_a_bad_rules_file_is_refused_naming_the_rule(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    rule = {
        "name": '"OverdueHigh"',
        "kind": '"overdue"',
        "severity": '"warning"',
        "by": '["category"]',
        "threshold": "500",
        "summary": '"x"',
        "runbook": '"y"',
        key: value,
    }
    path = tmp_path / "rules.toml"
    path.write_text("[[rule]]\n" + "\n".join(f"{k} = {v}" for k, v in rule.items()))
    with pytest.raises(AlertRulesError, match="rule OverdueHigh") as refused:
        AlertRules.load(path)
    assert message in str(refused.value)


def test_the_packaged_rules_load() -> None:
    rules = AlertRules.load()
    assert [r.name for r in rules.rules] == ["BacklogSpike", "OverdueHigh", "BreachRateHigh"]
    assert all(r.runbook and r.summary for r in rules.rules)


def test_a_batch_load_notifies_the_webhook_and_queues_what_it_could_not_send(
    demo: tuple[Settings, str], tmp_path: Path
) -> None:
    """`removal-audit run` over the seed's files with a webhook set: every episode goes out
    (firing, then resolved) once the history window allows it; a receiver that is down
    leaves them queued, and `alerts --send` delivers them later."""
    receiver = Receiver()
    try:
        data = demo[0].data_dir
        inputs = [data / "requests.avro", data / "actions.avro"]
        settings = Settings(
            database=tmp_path / "audit.duckdb",
            alert_webhook_url=f"http://127.0.0.1:{_closed_port()}/hook",  # down
            alert_notify_history_days=10_000,
            quality_gate=False,
        )
        report = run_batch(inputs, settings)
        assert report.alerts.startswith("alerts through 2021-04-30: 7 fired, 7 resolved")
        con = connect_writer(settings.database)
        try:
            queued = con.execute(
                "SELECT status, count(*) FROM alert_notifications WHERE delivered_at IS NULL "
                "GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        finally:
            con.close()
        assert queued == [("firing", 7), ("resolved", 7)]
        sent = subprocess.run(
            cli("alerts", "--send", "--db", str(settings.database)),
            env={**os.environ, "REMOVAL_AUDIT_ALERT_WEBHOOK_URL": receiver.url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "delivered 14, still queued 0" in sent.stdout
        delivered = receiver.delivered()
        assert len(delivered) == 14
        for alert_id, status in delivered:
            if status == "resolved":  # never before its firing one
                assert delivered.index((alert_id, "firing")) < delivered.index((alert_id, status))
        spike = [
            b["alerts"][0]
            for _, b in receiver.seen
            if b["alerts"][0]["labels"].get("category") == "SUICIDE_PROMOTION"
            and b["alerts"][0]["labels"]["alertname"] == "BacklogSpike"
        ]
        assert [a["status"] for a in spike] == ["firing", "resolved"]
        assert spike[0]["startsAt"] == "2021-03-04T00:00:00Z"
    finally:
        receiver.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Alerts in DuckDB: the figures the rules read, the rules' tracks and checkpoints, the
alert episodes (`alerts`) and the notification outbox (`alert_notifications`).

An alert and its notifications are written in the caller's transaction (the landing's, or
the quality gate's), so a notification exists if and only if its alert does; the sinks
deliver from the outbox afterwards, at least once (`connectors/alert_sinks.py`).

Example:
    fire(con, AlertRecord(...), now=now, sinks=("webhook",))  # alerts row + 1 notification
    resolve(con, "BacklogSpike-3fa2...", resolved_at, now=now, evidence={...})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from pipelines.alerting import Episode, Figures, Labels, Track, labels_json
from pipelines.resources import sql_dir

EPOCH = date(1970, 1, 1)
FIRING, RESOLVED = "firing", "resolved"


def day_number(day: date) -> int:
    return (day - EPOCH).days


def from_number(number: int) -> date:
    return EPOCH + timedelta(days=int(number))


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _query(name: str) -> str:
    return (sql_dir() / "alerts" / f"{name}.sql").read_text(encoding="utf-8")


def history_start(con: duckdb.DuckDBPyConnection) -> date | None:
    """The first day of the daily backlog: figures before it are not history but absence."""
    (first,) = con.execute(
        "SELECT min(epoch_us(as_of)) // 86400000000 FROM backlog_daily"
    ).fetchall()[0]
    return None if first is None else from_number(first)


def read_figures(
    con: duckdb.DuckDBPyConnection, first: date, last: date
) -> dict[tuple[str, str, str], Figures]:
    """Every finest series' backlog and deadlines over [first, last]."""
    series: dict[tuple[str, str, str], Figures] = {}
    params = {"first": day_number(first), "last": day_number(last)}
    for day, category, platform, authority, unresolved, overdue, carried in con.execute(
        _query("backlog_window"), params
    ).fetchall():
        figures = series.setdefault((category, platform, authority), Figures())
        if carried:
            figures.carried = (int(unresolved), int(overdue))
        else:
            figures.backlog[from_number(day)] = (int(unresolved), int(overdue))
    for day, category, platform, authority, due, breached in con.execute(
        _query("deadlines_window"), params
    ).fetchall():
        figures = series.setdefault((category, platform, authority), Figures())
        figures.deadlines[from_number(day)] = (int(due), int(breached))
    return series


# -- tracks and checkpoints -----------------------------------------------------------------


def _labels(text: str) -> Labels:
    return tuple(sorted(json.loads(text).items()))


def load_tracks(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, Labels], Track]:
    tracks = {}
    for rule, labels, holds_since, clear_since, alert_id, fired_on in con.execute(
        "SELECT rule, labels, holds_since, clear_since, alert_id, fired_on FROM alert_tracks"
    ).fetchall():
        episode = None if alert_id is None else Episode(alert_id, fired_on)
        tracks[(rule, _labels(labels))] = Track(holds_since, clear_since, episode)
    return tracks


def save_tracks(con: duckdb.DuckDBPyConnection, tracks: Mapping[tuple[str, Labels], Track]) -> None:
    """Replace the stored tracks; a track at rest (nothing running, nothing firing) is not
    kept: it is the state of a label set never seen."""
    con.execute("DELETE FROM alert_tracks")
    rows = [
        (
            rule,
            labels_json(labels),
            t.holds_since,
            t.clear_since,
            None if t.episode is None else t.episode.alert_id,
            None if t.episode is None else t.episode.fired_on,
        )
        for (rule, labels), t in sorted(tracks.items())
        if t != Track()
    ]
    if rows:
        con.executemany("INSERT INTO alert_tracks VALUES (?, ?, ?, ?, ?, ?)", rows)


def checkpoints(con: duckdb.DuckDBPyConnection) -> dict[str, date]:
    return dict(con.execute("SELECT rule, evaluated_through FROM alert_evaluations").fetchall())


def save_checkpoint(
    con: duckdb.DuckDBPyConnection, rule: str, digest: str, through: date, now: datetime
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO alert_evaluations VALUES (?, ?, ?, ?)", [rule, digest, through, now]
    )


# -- episodes and the outbox ----------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecord:
    """An episode as it starts. `fired_at`: event time for the event-time rules, wall clock
    for operational ones."""

    alert_id: str
    rule: str
    severity: str
    labels: str  # JSON object, keys sorted
    summary: str
    evidence: Mapping[str, Any]
    runbook: str
    fired_at: datetime


def fire(
    con: duckdb.DuckDBPyConnection,
    record: AlertRecord,
    *,
    now: datetime,
    sinks: Sequence[str],
    notify: bool = True,
    run_id: str | None = None,
) -> None:
    """Record an episode and queue its firing notification for each sink (none when
    `notify` is false: a historic episode recorded for the audit, not sent). `run_id`: the
    batch load it is recorded by (None: the streaming job)."""
    con.execute(
        "INSERT INTO alerts (alert_id, rule, severity, labels, summary, evidence, runbook, "
        "fired_at, resolved_at, detected_at, resolution_detected_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
        [
            record.alert_id,
            record.rule,
            record.severity,
            record.labels,
            record.summary,
            json.dumps({"fired": record.evidence}, sort_keys=True, default=str),
            record.runbook,
            record.fired_at,
            now,
        ],
    )
    if notify:
        _queue(con, record.alert_id, FIRING, sinks, now, run_id)


def resolve(
    con: duckdb.DuckDBPyConnection,
    alert_id: str,
    resolved_at: datetime,
    *,
    now: datetime,
    evidence: Mapping[str, Any] | None = None,
    summary: str | None = None,
    run_id: str | None = None,
) -> None:
    """End an episode; its resolved notification goes to every sink its firing one went to."""
    (stored,) = con.execute(
        "SELECT evidence FROM alerts WHERE alert_id = ?", [alert_id]
    ).fetchall()[0]
    merged = json.loads(stored)
    if evidence is not None:
        merged["resolved"] = evidence
    con.execute(
        "UPDATE alerts SET resolved_at = ?, resolution_detected_at = ?, evidence = ?, "
        "summary = coalesce(?, summary) WHERE alert_id = ? AND resolved_at IS NULL",
        [resolved_at, now, json.dumps(merged, sort_keys=True, default=str), summary, alert_id],
    )
    sinks = [
        sink
        for (sink,) in con.execute(
            "SELECT sink FROM alert_notifications WHERE alert_id = ? AND status = ? ORDER BY sink",
            [alert_id, FIRING],
        ).fetchall()
    ]
    _queue(con, alert_id, RESOLVED, sinks, now, run_id)


def _queue(
    con: duckdb.DuckDBPyConnection,
    alert_id: str,
    status: str,
    sinks: Iterable[str],
    now: datetime,
    run_id: str | None,
) -> None:
    for sink in sinks:
        con.execute(
            "INSERT OR IGNORE INTO alert_notifications (notification_id, alert_id, status, "
            "sink, created_at, attempts, next_attempt_at, delivered_at, last_error, run_id) "
            "VALUES (?, ?, ?, ?, ?, 0, ?, NULL, NULL, ?)",
            [f"{alert_id}:{status}:{sink}", alert_id, status, sink, now, now, run_id],
        )


def forget_evaluations(con: duckdb.DuckDBPyConnection, keep_rules: Sequence[str]) -> None:
    """Drop what the alert rules derived from audit tables that are being replaced: their
    episodes, tracks and checkpoints, and the notifications of those episodes not sent yet
    (they would tell of episodes no table shows). Sent notifications stay, as the history
    of what receivers were told, each with the load it belongs to (run_id). Episodes of
    `keep_rules` (operational alerts about the loads themselves, e.g. a held load) stay."""
    con.execute("DELETE FROM alerts WHERE NOT list_contains(?, rule)", [list(keep_rules)])
    con.execute(
        "DELETE FROM alert_notifications WHERE delivered_at IS NULL "
        "AND alert_id NOT IN (SELECT alert_id FROM alerts)"
    )
    con.execute("DELETE FROM alert_tracks")
    con.execute("DELETE FROM alert_evaluations")


def firing(con: duckdb.DuckDBPyConnection, rule: str, labels: str) -> list[str]:
    """alert_ids of the episodes of `rule` for `labels` firing now."""
    return [
        alert_id
        for (alert_id,) in con.execute(
            "SELECT alert_id FROM alerts WHERE rule = ? AND labels = ? AND resolved_at IS NULL",
            [rule, labels],
        ).fetchall()
    ]


@dataclass(frozen=True)
class Notification:
    """A queued notification with what its payload needs."""

    notification_id: str
    alert_id: str
    status: str
    sink: str
    attempts: int
    rule: str
    severity: str
    labels: Mapping[str, str]
    summary: str
    evidence: str
    runbook: str
    fired_at: datetime
    resolved_at: datetime | None
    detected_at: datetime


def due_notifications(
    con: duckdb.DuckDBPyConnection, sink: str, now: datetime, limit: int = 500
) -> list[Notification]:
    """Undelivered notifications of `sink` whose retry time has come, oldest first; a
    resolved one waits while its firing one is undelivered (receivers see them in order)."""
    rows = con.execute(
        """
        SELECT n.notification_id, n.alert_id, n.status, n.sink, n.attempts, a.rule,
            a.severity, a.labels, a.summary, a.evidence, a.runbook, a.fired_at,
            a.resolved_at,
            CASE WHEN n.status = 'resolved' THEN a.resolution_detected_at
                 ELSE a.detected_at END
        FROM alert_notifications AS n JOIN alerts AS a USING (alert_id)
        WHERE n.sink = $sink AND n.delivered_at IS NULL AND n.next_attempt_at <= $now
          AND NOT (n.status = 'resolved' AND EXISTS (
              SELECT 1 FROM alert_notifications AS f
              WHERE f.alert_id = n.alert_id AND f.sink = n.sink AND f.status = 'firing'
                AND f.delivered_at IS NULL))
        ORDER BY n.created_at, a.fired_at, n.status DESC, n.notification_id
        LIMIT $limit
        """,
        {"sink": sink, "now": now, "limit": limit},
    ).fetchall()
    out = []
    for row in rows:
        (nid, aid, status, sink_name, attempts, rule, severity, labels) = row[:8]
        summary, evidence, runbook, fired_at, resolved_at, detected_at = row[8:]
        out.append(
            Notification(
                nid,
                aid,
                status,
                sink_name,
                attempts,
                rule,
                severity,
                json.loads(labels),
                summary,
                evidence,
                runbook,
                fired_at,
                resolved_at,
                detected_at or now,
            )
        )
    return out


def mark_delivered(
    con: duckdb.DuckDBPyConnection, notification_ids: Sequence[str], now: datetime
) -> None:
    for notification_id in notification_ids:
        con.execute(
            "UPDATE alert_notifications SET delivered_at = ?, attempts = attempts + 1, "
            "last_error = NULL WHERE notification_id = ?",
            [now, notification_id],
        )


def mark_failed(
    con: duckdb.DuckDBPyConnection,
    notification_id: str,
    error: str,
    now: datetime,
    retry_max_s: float,
) -> None:
    """Retry later, with exponential backoff: 1 s, 2 s, 4 s ... up to `retry_max_s`."""
    (attempts,) = con.execute(
        "SELECT attempts FROM alert_notifications WHERE notification_id = ?", [notification_id]
    ).fetchall()[0]
    wait = min(float(2**attempts), retry_max_s)
    con.execute(
        "UPDATE alert_notifications SET attempts = attempts + 1, next_attempt_at = ?, "
        "last_error = ? WHERE notification_id = ?",
        [now + timedelta(seconds=wait), error[:2000], notification_id],
    )

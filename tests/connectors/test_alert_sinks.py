"""The webhook sink against a real local HTTP server and a real DuckDB outbox: Alertmanager's
payload, retries with exponential backoff, a resolved notification never before its
firing one, and nothing lost while the receiver is down."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from connectors import duckdb_alerts as outbox
from connectors import duckdb_quality as dq
from connectors.alert_sinks import AlertDispatcher, Webhook, webhook_body
from connectors.duckdb_sink import connect_writer
from tests.webhook_receiver import Receiver

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LABELS = '{"authority": "Roskomnadzor", "category": "DRUGS", "platform": "twitter"}'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect_writer(tmp_path / "audit.duckdb")
    yield c
    c.close()


def _fire(con: duckdb.DuckDBPyConnection, alert_id: str, at: datetime = T0) -> None:
    outbox.fire(
        con,
        outbox.AlertRecord(
            alert_id,
            "OverdueHigh",
            "warning",
            LABELS,
            "600 DRUGS requests open past their deadline",
            {"overdue": 600, "threshold": 500},
            "removal-audit sql -q oldest_open_requests",
            datetime(2021, 3, 7, tzinfo=UTC),
        ),
        now=at,
        sinks=("webhook",),
    )


def _queue(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, datetime, bool]]:
    return con.execute(
        "SELECT notification_id, attempts, next_attempt_at, delivered_at IS NOT NULL "
        "FROM alert_notifications ORDER BY notification_id"
    ).fetchall()


def test_a_refused_notification_is_retried_with_backoff_in_alertmanager_format(
    con: duckdb.DuckDBPyConnection, receiver: Receiver
) -> None:
    _fire(con, "OverdueHigh-1")
    receiver.answers = [503, 500]
    dispatcher = AlertDispatcher(webhook=Webhook(receiver.url), retry_max_s=300)

    first = dispatcher.deliver(con, T0)
    assert (first.delivered, first.failed) == (0, 1)
    assert "HTTP 503" in first.errors[0]
    assert _queue(con) == [("OverdueHigh-1:firing:webhook", 1, T0 + timedelta(seconds=1), False)]
    # Not due before its backoff ends: nothing is sent.
    assert dispatcher.deliver(con, T0 + timedelta(milliseconds=900)).failed == 0
    assert len(receiver.seen) == 1
    # Second refusal: the wait doubles.
    dispatcher.deliver(con, T0 + timedelta(seconds=1))
    assert _queue(con)[0][1:3] == (2, T0 + timedelta(seconds=3))
    done = dispatcher.deliver(con, T0 + timedelta(seconds=3))
    assert (done.delivered, done.failed) == (1, 0)
    assert _queue(con)[0][3] is True
    status, body = receiver.seen[-1]
    assert status == 200 and body["version"] == "4" and body["status"] == "firing"
    alert = body["alerts"][0]
    assert alert["labels"] == {
        "alertname": "OverdueHigh",
        "severity": "warning",
        "authority": "Roskomnadzor",
        "category": "DRUGS",
        "platform": "twitter",
    }
    assert alert["startsAt"] == "2021-03-07T00:00:00Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert json.loads(alert["annotations"]["evidence"]) == {
        "fired": {"overdue": 600, "threshold": 500}
    }
    # Delivered once: a later round sends nothing again.
    assert dispatcher.deliver(con, T0 + timedelta(hours=1)).delivered == 0
    assert len(receiver.seen) == 3


def test_a_resolved_notification_waits_for_its_firing_one(
    con: duckdb.DuckDBPyConnection, receiver: Receiver
) -> None:
    _fire(con, "OverdueHigh-1")
    outbox.resolve(
        con, "OverdueHigh-1", datetime(2021, 3, 28, tzinfo=UTC), now=T0, evidence={"overdue": 480}
    )
    _fire(con, "OverdueHigh-2", T0 + timedelta(seconds=1))
    receiver.answers = [503]
    dispatcher = AlertDispatcher(webhook=Webhook(receiver.url), retry_max_s=300)
    report = dispatcher.deliver(con, T0 + timedelta(seconds=1))
    # The receiver is down: one POST, and the rest wait the same backoff, none lost.
    assert (report.delivered, report.failed, len(receiver.seen)) == (0, 2, 1)
    assert [q[1] for q in _queue(con)] == [1, 0, 1]  # the resolved one was not tried
    dispatcher.deliver(con, T0 + timedelta(seconds=5))
    assert receiver.delivered() == [
        ("OverdueHigh-1", "firing"),
        ("OverdueHigh-2", "firing"),
        ("OverdueHigh-1", "resolved"),
    ]
    resolved = receiver.seen[-1][1]["alerts"][0]
    assert resolved["endsAt"] == "2021-03-28T00:00:00Z"
    assert json.loads(resolved["annotations"]["evidence"])["resolved"] == {"overdue": 480}


def test_backoff_is_capped_and_an_unreachable_receiver_is_said_so(
    con: duckdb.DuckDBPyConnection,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    _fire(con, "OverdueHigh-1")
    dispatcher = AlertDispatcher(
        webhook=Webhook(f"http://127.0.0.1:{closed}/hook", timeout_s=2), retry_max_s=10
    )
    now = T0
    waits = []
    for _ in range(6):
        report = dispatcher.deliver(con, now)
        assert report.failed == 1 and "unreachable" in report.errors[0]
        next_at = _queue(con)[0][2]
        waits.append((next_at - now).total_seconds())
        now = next_at
    assert waits == [1, 2, 4, 8, 10, 10]


def test_webhook_body_of_a_resolved_alert_names_its_end() -> None:
    n = outbox.Notification(
        "A-1:resolved:webhook",
        "A-1",
        "resolved",
        "webhook",
        0,
        "BacklogSpike",
        "critical",
        {"category": "SUICIDE_PROMOTION"},
        "grew",
        "{}",
        "look",
        datetime(2021, 3, 4, tzinfo=UTC),
        datetime(2021, 3, 14, tzinfo=UTC),
        T0,
    )
    body = webhook_body(n)
    assert body["status"] == "resolved" and body["groupKey"] == "removal-audit:A-1"
    assert body["alerts"][0]["endsAt"] == "2021-03-14T00:00:00Z"
    assert body["commonLabels"]["alertname"] == "BacklogSpike"


def test_a_held_batch_is_notified_once_and_its_release_after_it(
    con: duckdb.DuckDBPyConnection, receiver: Receiver
) -> None:
    for validation in ("v1", "v2"):  # a second failing check does not fire again
        dq.hold(
            con,
            batch_ids=[f"batch-{validation}"],
            path="stream",
            validation_id=validation,
            failed_suites=["requests"],
            evidence={"requests": "1 unexpected"},
            sinks=("webhook",),
        )
    dispatcher = AlertDispatcher(webhook=Webhook(receiver.url))
    dispatcher.deliver(con, T0)
    assert dq.release_holds(con, "v3") == 2
    dispatcher.deliver(con, datetime.now(UTC) + timedelta(seconds=1))
    assert receiver.delivered() == [
        ("BatchHeld:stream:v1", "firing"),
        ("BatchHeld:stream:v1", "resolved"),
    ]
    labels = receiver.seen[0][1]["alerts"][0]["labels"]
    assert labels == {"alertname": "BatchHeld", "severity": "critical", "path": "stream"}

"""The alert monitor: evaluates the alert rules on what has landed, day by day of event time,
and records what fired and resolved (with its notifications) in the caller's transaction.

Each rule resumes the day after the last day it was evaluated through, so an evaluation
per snapshot (streaming) or per load (batch) steps each track exactly once per day. An
episode that had already ended `notify_history_days` before the data came in (a replay of
years of history) is recorded, not notified: on-call hears about what is happening, the
audit keeps everything.

Example:
    monitor = AlertMonitor(AlertRules.load(), sinks=("kafka", "webhook"))
    outcome = monitor.evaluate(con, through=date(2021, 3, 4))
    outcome.describe() == "alerts: 1 fired, 0 resolved; firing: BacklogSpike {...}"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from connectors import duckdb_alerts as store
from connectors.alert_sinks import AlertDispatcher, AlertTopic, DeliveryReport, Webhook
from connectors.quarantine_topic import QuarantineTopicSettings
from pipelines.alert_rules import AlertRule, AlertRules
from pipelines.alerting import (
    ONE_DAY,
    Transition,
    day_range,
    evaluate,
    labels_json,
    resolve_removed,
)

log = logging.getLogger(__name__)


@dataclass
class AlertOutcome:
    fired: int = 0
    resolved: int = 0
    silent: int = 0  # historic episodes recorded without notifications
    evaluated_through: date | None = None
    transitions: list[Transition] = field(default_factory=list)
    waiting: str = ""  # why no day was evaluated, when none was

    def describe(self) -> str:
        if self.evaluated_through is None:
            return f"alerts: nothing to evaluate yet ({self.waiting or 'no data'})"
        text = (
            f"alerts through {self.evaluated_through}: {self.fired} fired, {self.resolved} resolved"
        )
        if self.silent:
            text += f" ({self.silent} historic episodes recorded, not notified)"
        return text


class AlertMonitor:
    def __init__(
        self, rules: AlertRules, sinks: Sequence[str] = (), notify_history_days: int = 7
    ) -> None:
        self.rules = rules
        self.sinks = tuple(sinks)
        self.notify_history = timedelta(days=notify_history_days)

    @classmethod
    def from_settings(cls, settings: Any, sinks: Sequence[str]) -> AlertMonitor:
        return cls(AlertRules.load(settings.alert_rules), sinks, settings.alert_notify_history_days)

    def evaluate(
        self,
        con: duckdb.DuckDBPyConnection,
        through: date | None = None,
        *,
        now: datetime | None = None,
        run_id: str | None = None,
    ) -> AlertOutcome:
        """Evaluate every rule from where it stopped through `through` (default: the day of
        the data horizon, the last midnight the landed data has passed) and record the
        transitions, their notifications tied to the batch load `run_id` (None: streaming).
        Runs in the caller's transaction."""
        now = now or datetime.now(UTC)
        start = store.history_start(con)
        if start is None:
            return AlertOutcome(waiting="no daily backlog yet")
        through = through or _horizon_day(con)
        if through is None or through < start:
            # The first day's figures are the backlog at the midnight after the first
            # event: until the data passes that midnight, no day is complete.
            return AlertOutcome(waiting=f"the data does not reach {start} yet")
        marks = store.checkpoints(con)
        todo: list[tuple[AlertRule, date]] = []
        for rule in self.rules.rules:
            first = marks[rule.name] + ONE_DAY if rule.name in marks else start
            if first <= through:
                todo.append((rule, first))
        tracks = store.load_tracks(con)
        transitions: list[Transition] = []
        if todo:
            earliest = min(first - ONE_DAY * rule.lookback_days for rule, first in todo)
            series = store.read_figures(con, earliest, through)
            for rule, first in todo:
                result = evaluate([rule], series, tracks, day_range(first, through), start)
                tracks = result.tracks
                transitions += result.transitions
        removed = resolve_removed(tracks, self.rules.rules, through)
        for gone in removed:
            tracks.pop((gone.rule, gone.labels), None)
        transitions = sorted(transitions, key=lambda t: (t.day, t.kind == "fired")) + removed
        outcome = self._record(con, transitions, through, now, run_id)
        if todo or removed:  # otherwise the tracks are as loaded: no rewrite per snapshot
            store.save_tracks(con, tracks)
        for rule, _ in todo:
            store.save_checkpoint(con, rule.name, rule.digest(), through, now)
        outcome.evaluated_through = through
        return outcome

    def _record(
        self,
        con: duckdb.DuckDBPyConnection,
        transitions: Sequence[Transition],
        through: date,
        now: datetime,
        run_id: str | None,
    ) -> AlertOutcome:
        rules = {rule.name: rule for rule in self.rules.rules}
        ends = {t.alert_id: t.day for t in transitions if t.kind == "resolved"}
        outcome = AlertOutcome(transitions=list(transitions))
        for t in transitions:
            if t.kind == "resolved":
                store.resolve(
                    con,
                    t.alert_id,
                    store.midnight(t.day),
                    now=now,
                    evidence=t.evidence,
                    summary=None,
                    run_id=run_id,
                )
                outcome.resolved += 1
                continue
            rule = rules[t.rule]
            ended = ends.get(t.alert_id)
            notify = ended is None or through - ended <= self.notify_history
            store.fire(
                con,
                store.AlertRecord(
                    t.alert_id,
                    t.rule,
                    rule.severity,
                    labels_json(t.labels),
                    t.summary,
                    t.evidence,
                    rule.runbook,
                    store.midnight(t.day),
                ),
                now=now,
                sinks=self.sinks,
                notify=notify,
                run_id=run_id,
            )
            outcome.fired += 1
            outcome.silent += not notify
        return outcome


def _horizon_day(con: duckdb.DuckDBPyConnection) -> date | None:
    """The last midnight at or before the data horizon."""
    (day,) = con.execute("SELECT epoch_us(horizon) // 86400000000 FROM data_horizon").fetchall()[0]
    return None if day is None else store.from_number(day)


def dispatcher_from_settings(settings: Any, *, kafka: bool) -> AlertDispatcher:
    """The sinks the settings configure: the webhook when its URL is set; the alerts topic
    when `kafka` (the streaming job; batch loads with kafka_alerts) and a topic is named."""
    topic = None
    if kafka and settings.alerts_topic and settings.alerts_topic.lower() != "none":
        source = QuarantineTopicSettings.from_settings(settings)
        topic = AlertTopic(
            source.bootstrap_servers,
            settings.kafka_topic_prefix + settings.alerts_topic,
            source.security,
        )
    webhook = None
    if settings.alert_webhook_url is not None:
        webhook = Webhook(
            settings.alert_webhook_url.get_secret_value(), settings.alert_webhook_timeout_seconds
        )
    return AlertDispatcher(topic, webhook, settings.alert_retry_max_seconds)


def deliver_after_load(
    con: duckdb.DuckDBPyConnection, dispatcher: AlertDispatcher, attempts: int = 3
) -> DeliveryReport:
    """A batch load's notifications: a few attempts with backoff, then they stay queued in
    the outbox (`removal-audit alerts send` retries them)."""
    total = DeliveryReport()
    for attempt in range(attempts):
        report = dispatcher.deliver(con)
        total.delivered += report.delivered
        total.failed = report.failed
        total.errors = report.errors
        if not report.failed:
            break
        if attempt + 1 < attempts:
            time.sleep(float(2**attempt))
    return total

"""Alert sinks: the Kafka topic `removal.alerts` (Avro, schemas/alert/) and an
Alertmanager-compatible webhook, delivered from the DuckDB outbox (`alert_notifications`).

Delivery is at least once: a notification is marked delivered only after the broker
acknowledged it or the receiver answered 2xx; a failure is retried with exponential backoff
(1 s, 2 s, 4 s ... up to `retry_max_s`), across restarts, since the outbox is in DuckDB.
Receivers dedupe by notification id (Kafka: the `notification_id` field; webhook: the
alert's `fingerprint` + status). A resolved notification is never sent before its firing
one.

The webhook body is Alertmanager's webhook format (version 4), one POST per notification,
so receivers written for Alertmanager (chat bridges, paging services, incident tools) take
it as it is:

    {"version": "4", "status": "firing", "receiver": "removal-audit",
     "groupKey": "removal-audit:BacklogSpike-3fa2...", "alerts": [{"status": "firing",
     "labels": {"alertname": "BacklogSpike", "severity": "critical", "category": ...},
     "annotations": {"summary": ..., "runbook": ..., "evidence": "{...}"},
     "startsAt": "2021-03-04T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", ...}], ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError

from connectors import duckdb_alerts as outbox
from connectors.avro_codec import encode_single_object
from connectors.duckdb_alerts import Notification
from connectors.kafka_produce import CONNECTION_OPTIONS, Outgoing, produce
from connectors.schema_store import SchemaStore
from connectors.threads import join_patiently

log = logging.getLogger(__name__)

ALERTS_SUBJECT = "removal.alerts-value"
KAFKA, WEBHOOK = "kafka", "webhook"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" for a firing alert
_MAX_PASSES = 10


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class AlertTopic:
    """Where alert notifications are produced. `security`: kafka-python's connection options
    (security_protocol, sasl_*, ssl_*), left out of repr."""

    bootstrap_servers: str
    topic: str
    security: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    partitions: int = 1  # one partition: every consumer sees notifications in order
    replication_factor: int = 1
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        unknown = set(self.security) - set(CONNECTION_OPTIONS)
        if unknown:
            raise ValueError(f"not a connection option: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "security", dict(self.security))

    def admin_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": "removal-audit-alerts",
            "request_timeout_ms": int(self.timeout_s * 1000),
            **self.security,
        }

    def producer_config(self) -> dict[str, Any]:
        delivery_ms = int(self.timeout_s * 1000)
        return {
            **self.admin_config(),
            "acks": "all",
            "enable_idempotence": True,
            "delivery_timeout_ms": delivery_ms,
            "request_timeout_ms": max(1_000, delivery_ms // 2),
            "max_block_ms": delivery_ms,
            "allow_auto_create_topics": False,
        }


def ensure_alert_topic(topic: AlertTopic) -> None:
    """Create the alerts topic unless it exists (compacted by key would lose the firing
    notification of a resolved episode, so it is a plain, time-retained topic)."""
    admin = KafkaAdminClient(**topic.admin_config())
    try:
        if topic.topic not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    {
                        topic.topic: {
                            "num_partitions": topic.partitions,
                            "replication_factor": topic.replication_factor,
                        }
                    }
                )
                log.info("created topic %s", topic.topic)
    finally:
        admin.close()


def alert_record(n: Notification) -> dict[str, Any]:
    """The Avro record (schemas/alert/v1.avsc) of a notification."""
    return {
        "notification_id": f"{n.alert_id}:{n.status}",
        "alert_id": n.alert_id,
        "status": n.status.upper(),
        "rule": n.rule,
        "severity": n.severity,
        "labels": dict(n.labels),
        "summary": n.summary,
        "evidence_json": n.evidence,
        "runbook": n.runbook,
        "fired_at": n.fired_at,
        "resolved_at": n.resolved_at if n.status == outbox.RESOLVED else None,
        "detected_at": n.detected_at,
    }


def webhook_body(n: Notification, receiver: str = "removal-audit") -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) carrying one notification."""
    labels = {"alertname": n.rule, "severity": n.severity, **n.labels}
    annotations = {"summary": n.summary, "runbook": n.runbook, "evidence": n.evidence}
    resolved = n.status == outbox.RESOLVED and n.resolved_at is not None
    alert = {
        "status": n.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(n.fired_at),
        "endsAt": _iso(n.resolved_at) if resolved and n.resolved_at else _ZERO_TIME,
        "generatorURL": "",
        "fingerprint": n.alert_id,
    }
    return {
        "version": "4",
        "groupKey": f"removal-audit:{n.alert_id}",
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": receiver,
        "groupLabels": {"alertname": n.rule},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    }


class WebhookError(RuntimeError):
    """The receiver did not take the notification."""


@dataclass(frozen=True)
class Webhook:
    url: str = field(repr=False)  # may carry a token
    timeout_s: float = 5.0

    def post(self, body: Mapping[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "removal-audit"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            raise WebhookError(f"webhook answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise WebhookError(f"webhook unreachable: {reason}") from None


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class AlertDispatcher:
    """Delivers the outbox's due notifications to the configured sinks."""

    def __init__(
        self,
        topic: AlertTopic | None = None,
        webhook: Webhook | None = None,
        retry_max_s: float = 300.0,
    ) -> None:
        self.topic, self.webhook, self.retry_max_s = topic, webhook, retry_max_s
        self._producer: KafkaProducer | None = None
        self._guard: AbstractContextManager[Any] = contextlib.nullcontext()
        self._store: SchemaStore | None = None

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(name for name, sink in ((KAFKA, self.topic), (WEBHOOK, self.webhook)) if sink)

    def deliver(
        self,
        con: duckdb.DuckDBPyConnection,
        now: datetime | None = None,
        guard: AbstractContextManager[Any] | None = None,
    ) -> DeliveryReport:
        """Send what is due. `guard` is held around every use of `con` and released while
        sending (the streaming writer's lock: the network never holds up a landing)."""
        report = DeliveryReport()
        now = now or datetime.now(UTC)
        self._guard = guard or contextlib.nullcontext()
        # A resolved notification becomes due once its firing one is delivered: passes go
        # on while they deliver something and nothing fails.
        for _ in range(_MAX_PASSES):
            delivered, failed = report.delivered, report.failed
            if self.topic is not None:
                self._to_kafka(con, now, report)
            if self.webhook is not None:
                self._to_webhook(con, now, report)
            if report.delivered == delivered or report.failed > failed:
                break
        return report

    def _to_kafka(self, con: duckdb.DuckDBPyConnection, now: datetime, r: DeliveryReport) -> None:
        assert self.topic is not None
        with self._guard:
            due = outbox.due_notifications(con, KAFKA, now)
        if not due:
            return
        try:
            if self._producer is None:
                ensure_alert_topic(self.topic)
                self._producer = KafkaProducer(**self.topic.producer_config())
                self._store = SchemaStore.load()
            assert self._store is not None
            records = [
                Outgoing(
                    n.notification_id,
                    self.topic.topic,
                    n.alert_id.encode(),
                    encode_single_object(alert_record(n), ALERTS_SUBJECT, self._store),
                    (),
                )
                for n in due
            ]
            written = produce(self._producer, records, self.topic.timeout_s)
        except KafkaError as error:
            self._failed(con, [n.notification_id for n in due], str(error), now, r)
            return
        ok = [w.quarantine_id for w in written if w.error is None]
        with self._guard:
            con.execute("BEGIN")
            outbox.mark_delivered(con, ok, now)
            for w in written:
                if w.error is not None:
                    outbox.mark_failed(con, w.quarantine_id, repr(w.error), now, self.retry_max_s)
                    r.errors.append(f"kafka: {w.error!r}")
            con.execute("COMMIT")
        r.delivered += len(ok)
        r.failed += len(written) - len(ok)

    def _to_webhook(self, con: duckdb.DuckDBPyConnection, now: datetime, r: DeliveryReport) -> None:
        assert self.webhook is not None
        with self._guard:
            due = outbox.due_notifications(con, WEBHOOK, now)
        for i, n in enumerate(due):
            try:
                self.webhook.post(webhook_body(n))
            except WebhookError as error:
                # The receiver is down or refusing: the rest wait for the same backoff
                # rather than each timing out in turn.
                rest = [m.notification_id for m in due[i:]]
                self._failed(con, rest, str(error), now, r)
                return
            with self._guard:
                outbox.mark_delivered(con, [n.notification_id], now)
            r.delivered += 1

    def _failed(
        self,
        con: duckdb.DuckDBPyConnection,
        ids: Sequence[str],
        error: str,
        now: datetime,
        r: DeliveryReport,
    ) -> None:
        with self._guard:
            con.execute("BEGIN")
            for notification_id in ids:
                outbox.mark_failed(con, notification_id, error, now, self.retry_max_s)
            con.execute("COMMIT")
        r.failed += len(ids)
        r.errors.append(error)
        log.warning("alert notifications not delivered (%d, retried later): %s", len(ids), error)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


class DeliveryThread:
    """Delivers the outbox every `every_s` seconds, or at once when `poke`d, using the
    writer's connection under the writer's lock (released while sending)."""

    def __init__(
        self,
        dispatcher: AlertDispatcher,
        con: duckdb.DuckDBPyConnection,
        guard: AbstractContextManager[Any],
        every_s: float = 1.0,
    ) -> None:
        self._dispatcher, self._con, self._guard, self._every = dispatcher, con, guard, every_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alert-delivery", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._every)
            self._wake.clear()
            self._round()

    def _round(self) -> None:
        try:
            self._dispatcher.deliver(self._con, guard=self._guard)
        except Exception:  # a sink's unexpected failure: logged, retried next round
            log.exception("alert delivery failed (retried)")

    def close(self) -> None:
        """Stop after one last round (what the final landing queued). Waits for a round in
        progress however long it takes: the thread uses the writer's DuckDB connection,
        which the writer closes next (connectors.threads)."""
        self._stop.set()
        self._wake.set()
        join_patiently(
            self._thread, f"delivering notifications (sinks: {', '.join(self._dispatcher.sinks)})"
        )
        self._round()
        self._dispatcher.close()

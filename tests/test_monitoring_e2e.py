"""Monitoring end to end, against the real broker and Prism: the seed scenario is published
(time-compressed) and audited by the streaming job with an Alertmanager-compatible webhook
(a local HTTP server that refuses the first delivery), the alerts topic and the metrics
endpoint configured.

The March 2021 surge raises BacklogSpike for suicide promotion at its event time
(2021-03-04); the same notifications, in the same order, come through the webhook (after a
retry) and the alerts topic; no spike fires in the steady years; a scrape of the live job's
metrics shows the seed's record account and the same backlog as the batch path's
database, and the job's snapshot as of 1 March 2021 shows the published figures.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from connectors.avro_codec import decode
from connectors.duckdb_metrics import read_metrics
from connectors.duckdb_reader import connect_auditor
from connectors.kafka_publish import PublishSettings, ensure_topics
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC
from pipelines.settings import Settings
from tests.ports import free_port
from tests.streaming_job import StreamingJob, cli
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prism]

RECORDS = 63_281
SPEEDUP = 2_000_000.0
BUDGET_S = 900.0
SPIKE = {"category": "SUICIDE_PROMOTION", "platform": "twitter", "authority": "Roskomnadzor"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.answers = [503]  # the first delivery is refused: it must be retried
    try:
        yield r
    finally:
        r.close()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


RECORDS_IN = ("removal_audit_records_in_total", ())


def _scrape_until(
    port: int, job: StreamingJob, done: Callable[[dict[Any, float]], bool]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + 60
    while True:
        scraped = _scrape(port)
        if done(scraped) or time.monotonic() > deadline:
            return scraped
        assert job.alive(), job.tail()
        time.sleep(1.0)


def _alerts_topic(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    store = SchemaStore.load()
    try:
        records = [decode(m.value, "removal.alerts-value", store).record for m in consumer]
    finally:
        consumer.close()
    assert len(records) >= expected, records
    return records


def test_spike_alert_reaches_webhook_and_topic_and_metrics_show_the_seed(
    demo: tuple[Settings, str],
    kafka_bootstrap: str,
    prism_location: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    prefix = f"mon-{uuid.uuid4().hex[:8]}."
    ensure_topics(
        PublishSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix),
        [prefix + t for t in (REQUESTS_TOPIC, ACTIONS_TOPIC)],
    )
    port = free_port()
    database = tmp_path / "stream.duckdb"
    job = StreamingJob(
        database,
        kafka_bootstrap,
        prefix,
        prism_location,
        tmp_path / "job.log",
        records=RECORDS,
        env={
            "REMOVAL_AUDIT_ALERT_WEBHOOK_URL": receiver.url,
            "REMOVAL_AUDIT_METRICS_PORT": str(port),
            # Four years replayed in about a minute: every episode is history by the time a
            # snapshot sees it; notify them all, as a live job would have.
            "REMOVAL_AUDIT_ALERT_NOTIFY_HISTORY_DAYS": "10000",
        },
    )
    publisher = subprocess.Popen(
        cli(
            *("publish", "--data-dir", str(demo[0].data_dir)),
            *("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix),
            *("--speedup", str(SPEEDUP)),
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        assert publisher.wait(timeout=BUDGET_S) == 0
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        job.wait_for(
            lambda s: (
                s["accounted"] == RECORDS and s["watermark"] is not None and s["watermark"] >= today
            ),
            BUDGET_S,
        )
        spikes = _wait_for_webhook(receiver, job, "resolved")
        # The metrics are refreshed right after each snapshot: the next one has it all.
        scraped = _scrape_until(port, job, lambda m: m.get(RECORDS_IN) == RECORDS)
        assert job.terminate() == 0, job.tail()
    finally:
        publisher.kill()
        if job.alive():
            job.kill()

    # The webhook: Alertmanager's format, the suicide-promotion spike fired at 2021-03-04
    # (event time) and resolved; the first POST was refused and retried.
    assert [status for status, _ in receiver.seen[:2]] == [503, 200]
    firing = [b for b in spikes if b["status"] == "firing"]
    assert len(firing) == 1 and len([b for b in spikes if b["status"] == "resolved"]) == 1
    alert = firing[0]["alerts"][0]
    assert firing[0]["version"] == "4"
    assert alert["labels"] == {"alertname": "BacklogSpike", "severity": "critical", **SPIKE}
    assert alert["startsAt"] == "2021-03-04T00:00:00Z"
    evidence = json.loads(alert["annotations"]["evidence"])["fired"]
    assert evidence["growth"] >= 100 and evidence["z"] >= 4
    assert "runbook" in alert["annotations"]
    # No spike in the steady years (2017-2020), for any category.
    every_spike = [
        b["alerts"][0]
        for b in receiver.bodies
        if b["alerts"][0]["labels"]["alertname"] == "BacklogSpike"
    ]
    assert all(a["startsAt"] >= "2021-01-01" for a in every_spike), every_spike

    # The alerts topic carries the same notifications, in the order the webhook got them.
    topic = _alerts_topic(kafka_bootstrap, prefix + "removal.alerts", len(receiver.bodies))
    sent = [(b["alerts"][0]["fingerprint"], b["status"].upper()) for b in receiver.bodies]
    assert [(r["alert_id"], r["status"]) for r in topic] == sent
    spike = [r for r in topic if r["rule"] == "BacklogSpike" and r["labels"] == SPIKE]
    assert [r["status"] for r in spike] == ["FIRING", "RESOLVED"]
    assert spike[0]["fired_at"] == datetime(2021, 3, 4, tzinfo=UTC)
    assert spike[1]["resolved_at"] == datetime(2021, 3, 14, tzinfo=UTC)

    # The live scrape: the seed's record account, and the backlog the batch path's
    # database gives at the same horizon.
    assert scraped[RECORDS_IN] == RECORDS
    assert scraped[("removal_audit_records_landed_total", ())] == 62_672
    assert scraped[("removal_audit_records_duplicate_total", ())] == 590
    quarantined = sum(
        v for (n, _), v in scraped.items() if n == "removal_audit_records_quarantined_total"
    )
    assert quarantined == 19
    batch = connect_auditor(demo[0].database)
    try:
        expected = read_metrics(batch)
    finally:
        batch.close()
    for figures in expected.requests:
        labels = (
            ("authority", figures.authority),
            ("category", figures.category),
            ("platform", figures.platform),
        )
        assert scraped[("removal_audit_unresolved_requests", labels)] == figures.unresolved
        assert scraped[("removal_audit_sla_breaches_total", labels)] == figures.breaches
    assert (
        scraped[
            ("removal_audit_alerts_firing", (("rule", "BacklogSpike"), ("severity", "critical")))
        ]
        == 0
    )

    # The published figures of 1 March 2021, from the job's own database.
    shown = subprocess.run(
        cli("monitor", "--db", str(database), "--once", "--as-of", "2021-03-01T00:00:00Z"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    as_of = {
        dict(s.labels)["category"]: s.value
        for family in text_string_to_metric_families(shown)
        for s in family.samples
        if s.name == "removal_audit_unresolved_requests"
    }
    assert sum(as_of.values()) == 2_862
    assert (as_of["SUICIDE_PROMOTION"], as_of["CHILD_SEXUAL_ABUSE_MATERIAL"], as_of["DRUGS"]) == (
        2_336,
        352,
        174,
    )


def _wait_for_webhook(receiver: Receiver, job: StreamingJob, status: str) -> list[dict[str, Any]]:
    """The webhook bodies of the suicide-promotion spike once its `status` one arrived."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        spikes = [
            b
            for b in list(receiver.bodies)
            if b["alerts"][0]["labels"].get("alertname") == "BacklogSpike"
            and b["alerts"][0]["labels"].get("category") == SPIKE["category"]
        ]
        if any(b["status"] == status for b in spikes):
            return spikes
        assert job.alive(), job.tail()
        time.sleep(1.0)
    raise AssertionError(f"no {status} spike on the webhook; got {receiver.bodies}\n{job.tail()}")

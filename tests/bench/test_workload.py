"""The benchmark workload (bench.workload, bench.publish): format, content, determinism,
cache, and publishing to Kafka.

A 2,000-event workload is generated once per module and read back the way the pipeline
reads it (connectors.avro_files, pipelines.intake); the calibration is checked on the plan
of a 20,000-event workload, which is drawn without being encoded. The publishing tests
marked `kafka` use the real broker of tests/kafka_broker_fixture.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2
from kafka.record.default_records import DefaultRecordBatch
from kafka.structs import TopicPartition

from bench import calibration as cal
from bench import workload as workload_module
from bench.encoding import RawMessageFileWriter, avro_string, timestamp_varints
from bench.payloads import expected_action, expected_request
from bench.plan import ACTION_TYPES, CATEGORIES, Plan, plan
from bench.publish import _Batch, kafka_partitions, publish_workload
from bench.workload import MANIFEST, Workload, ensure_workload, generate, sync_marker
from connectors.avro_files import RawMessage, read_raw_messages, write_raw_messages
from connectors.errors import ReasonCode
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, Accepted, IntakeRules, take_in
from pipelines.model import ActionType, RequestEvent, RequestEventType
from pipelines.policy import DEFAULT_RULE_ID, SlaPolicy
from pipelines.preflight import input_files

EVENTS = 2_000
SEED = 6


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    return generate(EVENTS, tmp_path_factory.mktemp("workload") / "w", SEED)


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load()


@pytest.fixture(scope="module")
def drawn() -> Plan:
    return plan(20_000, SEED, SlaPolicy.load())


def _read_all(workload: Workload, store: SchemaStore) -> list[tuple[Path, int, RawMessage]]:
    return [
        (path, position, message)
        for path in workload.files
        for position, message in read_raw_messages(path, store)
    ]


def test_every_message_goes_through_intake_as_the_manifest_counts(
    small: Workload, store: SchemaStore
) -> None:
    rules = IntakeRules(
        now=small.last_event_time + timedelta(days=1),
        max_clock_skew_seconds=300,
        oldest_plausible=datetime(2000, 1, 1, tzinfo=UTC),
        max_message_bytes=1_048_576,
    )
    accepted: list[Accepted] = []
    reasons: Counter[ReasonCode] = Counter()
    for path, position, message in _read_all(small, store):
        outcome = take_in(message, SourceRef(path.name, position), store, rules)
        if isinstance(outcome, Accepted):
            accepted.append(outcome)
            assert message.key == f"{outcome.event.platform}/{outcome.event.content_id}".encode()
            assert message.timestamp is not None and message.timestamp >= outcome.event.event_time
        else:
            reasons[outcome.reason] += 1
    ids = Counter(a.event.event_id for a in accepted)
    assert len(ids) == small.events == EVENTS
    assert len(accepted) - len(ids) == small.duplicates > 0
    assert reasons == {ReasonCode.TRUNCATED: small.malformed} and small.malformed >= 1
    assert small.messages == len(accepted) + small.malformed
    distinct = {a.event.event_id: a.event for a in accepted}
    assert sum(isinstance(e, RequestEvent) for e in distinct.values()) == small.requests
    assert small.requests + small.actions == small.events
    # A duplicate is the same bytes delivered again, later.
    first: dict[str, bytes] = {}
    for a in accepted:
        assert first.setdefault(a.event.event_id, a.payload) == a.payload


def test_manifest_files_and_time_span(small: Workload, store: SchemaStore) -> None:
    manifest = json.loads((small.directory / MANIFEST).read_text())
    assert manifest["generator_version"] == workload_module.GENERATOR_VERSION
    assert sorted(p.name for p in small.files) == manifest["files"]
    assert [p.name for p in small.files] == ["actions-0000.avro", "requests-0000.avro"]
    assert input_files([small.directory], store) == list(small.files)  # `removal-audit run DIR`
    topics = {m.topic for path, _, m in _read_all(small, store) if path.name.startswith("act")}
    assert topics == {ACTIONS_TOPIC}
    assert small.first_event_time >= cal.START
    span = timedelta(seconds=EVENTS / cal.MEAN_RATE_PER_S)
    assert small.first_event_time < cal.START + span < small.last_event_time


def test_raw_messages_merge_every_file_in_arrival_order(small: Workload) -> None:
    messages = list(small.raw_messages())
    stamps = [m[3] for m in messages]
    assert len(messages) == small.messages
    assert stamps == sorted(stamps)
    assert Counter(m[0] for m in messages).keys() == {REQUESTS_TOPIC, ACTIONS_TOPIC}


def test_arrivals_run_slightly_out_of_event_time_order(drawn: Plan) -> None:
    m = drawn.requests_topic
    times = drawn.request_event_times()[m.row]
    assert np.all(np.diff(m.arrival) >= 0)
    assert np.any(np.diff(times) < 0)  # out of order ...
    assert np.all(m.arrival - times < 120_000)  # ... but only slightly


def test_same_seed_same_bytes_other_seed_other_bytes(small: Workload, tmp_path: Path) -> None:
    again = generate(EVENTS, tmp_path / "again", SEED)
    other = generate(EVENTS, tmp_path / "other", SEED + 1)
    for mine, theirs in zip(small.files, again.files, strict=True):
        assert mine.read_bytes() == theirs.read_bytes()
    assert small.files[0].read_bytes() != other.files[0].read_bytes()


def test_files_are_what_the_project_writer_writes(small: Workload, store: SchemaStore) -> None:
    for path in small.files:
        messages = [m for _, m in read_raw_messages(path, store)]
        copy = path.with_suffix(".fastavro")
        write_raw_messages(copy, messages, store, sync_marker=sync_marker(EVENTS, SEED, path.name))
        assert copy.read_bytes() == path.read_bytes()
        copy.unlink()


def test_block_writer_cuts_blocks_as_fastavro(tmp_path: Path, store: SchemaStore) -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    filler = bytes(range(256)) * 4
    messages = [
        RawMessage(REQUESTS_TOPIC, b"k" * (i % 70), filler[: i % 900], at) for i in range(3_000)
    ]
    marker = b"0123456789abcdef"
    with RawMessageFileWriter(tmp_path / "fast.avro", store, marker) as out:
        stamp = timestamp_varints(np.array([int(at.timestamp() * 1000)] * len(messages)))
        out.add(avro_string(REQUESTS_TOPIC), [(m.key or b"", m.value) for m in messages], stamp)
    write_raw_messages(tmp_path / "slow.avro", messages, store, sync_marker=marker)
    assert (tmp_path / "fast.avro").read_bytes() == (tmp_path / "slow.avro").read_bytes()


@pytest.mark.parametrize("events", [1, 2, 3, 5, 17, 1_001])
def test_plan_holds_exactly_the_events_asked_for(events: int) -> None:
    p = plan(events, SEED, SlaPolicy.load())
    assert p.requests + len(p.wd_request) + len(p.act_at) == events
    assert np.all(p.act_request < p.requests) and np.all(p.wd_request < p.requests)


def test_category_and_platform_mix_follow_the_calibration(drawn: Plan) -> None:
    n = drawn.requests
    platforms = np.bincount(drawn.req_platform, minlength=len(cal.PLATFORMS)) / n
    for share, (name, expected) in zip(
        platforms, cal.expected_platform_shares().items(), strict=True
    ):
        assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 0.003, name
    categories = np.bincount(drawn.req_category, minlength=len(CATEGORIES)) / n
    for share, category in zip(categories, CATEGORIES, strict=True):
        expected = cal.expected_category_shares()[category]
        assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 0.003, category


def test_deadlines_hit_every_policy_rule_and_the_default(drawn: Plan) -> None:
    policy = SlaPolicy.load()
    rules = Counter(
        policy.deadline_for(expected_request(drawn, row)).rule_id
        for row in range(0, drawn.requests, 4)
    )
    assert set(rules) == {r.id for r in policy.rules} | {DEFAULT_RULE_ID}
    default_share = rules[DEFAULT_RULE_ID] / sum(rules.values())
    assert 0.2 < default_share < 0.5


def test_actions_withdrawals_and_repeats_have_the_planned_shape(drawn: Plan) -> None:
    n = drawn.requests
    types = Counter(ACTION_TYPES[t] for t in drawn.act_type.tolist())
    actions = len(drawn.act_at)
    assert 0.85 * n < actions < n  # requests > actions, slightly
    assert (types[ActionType.REMOVED] + types[ActionType.RESTRICTED]) / actions > 0.7
    assert 0.03 < types[ActionType.DECLINED] / actions < 0.1
    assert 0 < types[ActionType.REINSTATED] / actions < 0.03
    answered = np.zeros(n, dtype=bool)
    answered[drawn.act_request] = True
    assert 0.02 < 1 - answered.mean() < 0.07  # never answered: left open
    assert 0 < len(drawn.wd_request) < 0.01 * n
    contents = Counter(drawn.req_content.tolist())
    assert 0.05 < 1 - len(contents) / n < 0.15  # repeat demands
    for row in np.flatnonzero(drawn.act_type == ACTION_TYPES.index(ActionType.RESTRICTED))[:50]:
        action = expected_action(drawn, int(row))
        request = expected_request(drawn, int(drawn.act_request[row]))
        assert action.jurisdiction == request.jurisdiction
        assert action.acted_at > request.issued_at
    withdrawals = [expected_request(drawn, n + i) for i in range(len(drawn.wd_request))]
    assert all(w.event_type is RequestEventType.WITHDRAWN for w in withdrawals)
    assert all(w.withdrawn_at and w.withdrawn_at > w.issued_at for w in withdrawals)


def test_late_answers_come_after_the_deadline(drawn: Plan) -> None:
    policy = SlaPolicy.load()
    late = 0
    for row in range(0, len(drawn.act_at), 5):
        action = expected_action(drawn, row)
        request = expected_request(drawn, int(drawn.act_request[row]))
        late += action.acted_at > policy.deadline_for(request).due_at
    assert 0.05 < late / len(range(0, len(drawn.act_at), 5)) < 0.25


def test_ensure_workload_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = ensure_workload(300, 11)
    assert first.directory == tmp_path / "removal-audit" / "bench" / "workload-v1-300-11"
    assert [p.name for p in first.directory.parent.iterdir()] == [first.directory.name]

    def refuse(*args: object) -> Workload:
        raise AssertionError("regenerated a cached workload")

    monkeypatch.setattr(workload_module, "generate", refuse)
    assert ensure_workload(300, 11) == first
    with pytest.raises(AssertionError, match="regenerated"):
        ensure_workload(301, 11)


def test_generate_refuses_a_directory_with_avro_files(small: Workload) -> None:
    with pytest.raises(FileExistsError):
        generate(10, small.directory, SEED)


def test_kafka_partitions_are_the_default_partitioners() -> None:
    keys = [f"{p.name}/{n:015d}".encode() for p in cal.PLATFORMS for n in range(0, 10**15, 7**17)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(200))]
    expected = [(murmur2(k) & 0x7FFFFFFF) % 3 for k in keys]
    assert kafka_partitions(keys, 3).tolist() == expected


def test_record_batches_read_back_with_kafka_python() -> None:
    batch = _Batch()
    records = [(b"k1", b"v" * 300, 1_772_409_600_000), (None, b"", 1_772_409_600_007)]
    records += [(b"k%d" % i, b"x" * i, 1_772_409_599_990 + i) for i in range(200)]
    for key, value, at in records:
        batch.add(key, value, at)
    parsed = DefaultRecordBatch(batch.encode())
    assert parsed.validate_crc()
    got = [(r.offset, r.key, r.value, r.timestamp) for r in parsed]
    assert got == [(i, k, v, t) for i, (k, v, t) in enumerate(records)]


@pytest.mark.kafka
def test_publish_lands_every_message_where_the_result_says(
    small: Workload, kafka_bootstrap: str
) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    result = publish_workload(small, kafka_bootstrap, prefix)
    sent = list(small.raw_messages())
    assert result.messages == small.messages == sum(result.per_topic.values())
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    landed: dict[tuple[str, int], dict[int, tuple[bytes | None, bytes, int]]] = {}
    try:
        tps = [TopicPartition(tp, p) for tp, p in result.sends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while sum(map(len, landed.values())) < len(sent) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    landed.setdefault((tp.topic, tp.partition), {})[r.offset] = (
                        r.key,
                        r.value,
                        r.timestamp,
                    )
    finally:
        consumer.close()
    partitions = kafka_partitions([m[1] for m in sent], 3).tolist()
    expected = Counter(
        (prefix + m[0], p, m[1], m[2]) for m, p in zip(sent, partitions, strict=True)
    )
    got = Counter((tp[0], tp[1], k, v) for tp, rs in landed.items() for k, v, _ in rs.values())
    assert got == expected
    for tp, offsets in result.send_times().items():
        assert {o: landed[tp][o][2] for o in offsets} == offsets


@pytest.mark.kafka
def test_publish_paces_to_the_rate(small: Workload, kafka_bootstrap: str) -> None:
    result = publish_workload(
        small, kafka_bootstrap, f"bench-{uuid.uuid4().hex[:8]}.", rate=1_000, limit=300
    )
    assert result.messages == 300
    assert 0.29 <= result.seconds < 2.0
    stamps = sorted(t for pairs in result.sends.values() for t in pairs[1::2])
    assert 250 <= stamps[-1] - stamps[0] <= 1_500


def test_generate_checks_its_fast_encoding_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drifted(drawn: Plan, row: int) -> RequestEvent:
        return dataclasses.replace(expected_request(drawn, row), legal_basis="something else")

    monkeypatch.setattr(workload_module, "expected_request", drifted)
    with pytest.raises(AssertionError, match="fast encoding differs"):
        generate(200, tmp_path / "w", SEED)
    assert not list((tmp_path / "w").glob("*.avro"))

"""Intake under fuzzing: random bytes and damaged valid records through `take_in` on both
topics, then through the whole batch pipeline into DuckDB, and the atheris harness.

What must hold: nothing raises; every message gets a sound verdict (`check_intake`); a
valid record with bytes after it is never accepted; a run over fuzzed files balances its
record account and lands only payloads that are exactly one record and pass intake.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from connectors.avro_codec import DEFAULT_MAX_BYTES, decode
from connectors.avro_files import RawMessage, write_raw_messages
from connectors.duckdb_reader import connect_auditor, run_sql
from connectors.errors import DecodeError, ReasonCode
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore, SchemaVersion
from pipelines.batch import run_batch
from pipelines.intake import (
    ACTIONS_TOPIC,
    REQUESTS_TOPIC,
    SUBJECTS,
    Accepted,
    IntakeRules,
    Quarantined,
    take_in,
)
from pipelines.model import ActionEvent, ActionType, Category, RequestEvent, RequestEventType
from pipelines.settings import Settings
from tests.conftest import action, request
from tests.fuzzing import (
    APPENDING_OPS,
    DOMAIN_REASONS,
    FRAMINGS,
    REQUIRED_TEXT,
    TEXT,
    appended_reason,
    body_end,
    check_intake,
    mutate,
    mutations,
    payloads_of,
    random_mutation,
    records_for,
    writers_of,
)

STORE = SchemaStore.load()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = IntakeRules(
    now=NOW,
    max_clock_skew_seconds=300,
    oldest_plausible=datetime(2000, 1, 1, tzinfo=UTC),
    max_message_bytes=DEFAULT_MAX_BYTES,
)
TOPICS = (REQUESTS_TOPIC, ACTIONS_TOPIC)
TOPIC_OF = {subject: topic for topic, subject in SUBJECTS.items()}
ORIGIN = SourceRef("fuzz.avro", 7)
KEYS = st.none() | st.binary(max_size=12)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- payloads: any valid record, and records intake accepts ------------------------------

ANY_RECORD = payloads_of(STORE, writers_of(STORE, tuple(SUBJECTS.values())))
NAME = TEXT.filter(str.strip)
EVENT_TIME = st.datetimes(
    min_value=RULES.oldest_plausible.replace(tzinfo=None),
    max_value=NOW.replace(tzinfo=None),
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@st.composite
def acceptable_payloads(draw: st.DrawFn, topic: str) -> tuple[SchemaVersion, bytes]:
    """A generated record of any writer version of `topic`'s subject, with the fields
    intake checks set to pass: non-blank names, plausible times, a jurisdiction on a
    restriction, a withdrawal time on a withdrawal."""
    sv, framing = draw(st.sampled_from(writers_of(STORE, (SUBJECTS[topic],))))
    record = draw(records_for(sv))
    for name in REQUIRED_TEXT[topic]:
        record[name] = draw(NAME)
    if topic == REQUESTS_TOPIC:
        record["issued_at"] = draw(EVENT_TIME)
        if "withdrawn_at" in record:  # v2
            withdrawn = record["event_type"] == RequestEventType.WITHDRAWN
            record["withdrawn_at"] = draw(EVENT_TIME if withdrawn else st.none() | EVENT_TIME)
    else:
        record["acted_at"] = draw(EVENT_TIME)
        if record["action"] == ActionType.RESTRICTED:
            record["jurisdiction"] = draw(NAME)
    return sv, FRAMINGS[framing](record, sv.subject, STORE, sv.version)


ACCEPTABLE = st.sampled_from(TOPICS).flatmap(acceptable_payloads)
VALID = st.one_of(ANY_RECORD, ACCEPTABLE)


def verdict(
    topic: str, key: bytes | None, value: bytes, rules: IntakeRules = RULES
) -> Accepted | Quarantined:
    """take_in's verdict on one message, checked by `check_intake`."""
    message = RawMessage(topic, key, value)
    result = take_in(message, ORIGIN, STORE, rules)
    check_intake(message, ORIGIN, result, STORE, rules)
    event(type(result).__name__ if isinstance(result, Accepted) else result.reason.value)
    return result


# --- (a) nothing raises, every verdict is sound ------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=300), topic=st.sampled_from(TOPICS), key=KEYS)
def test_random_bytes_get_a_sound_verdict(payload: bytes, topic: str, key: bytes | None) -> None:
    verdict(topic, key, payload)


@FUZZ
@given(
    case=VALID,
    partner=VALID,
    edits=st.lists(mutations(), min_size=1, max_size=3),
    topic=st.sampled_from(TOPICS),
    key=KEYS,
)
def test_mutated_records_get_a_sound_verdict(
    case: tuple[SchemaVersion, bytes],
    partner: tuple[SchemaVersion, bytes],
    edits: list[Any],
    topic: str,
    key: bytes | None,
) -> None:
    _, payload = case
    for edit in edits:
        payload = mutate(edit, payload, partner[1])
    verdict(topic, key, payload)


# --- (b) a record with bytes after it is never accepted ------------------------------------


@FUZZ
@given(
    case=VALID,
    extra=st.binary(min_size=1, max_size=30) | VALID.map(lambda c: c[1]),
    topic=st.sampled_from(TOPICS),
    key=KEYS,
    data=st.data(),
)
def test_appended_bytes_are_never_accepted(
    case: tuple[SchemaVersion, bytes],
    extra: bytes,
    topic: str,
    key: bytes | None,
    data: st.DataObject,
) -> None:
    """Random bytes or a whole second record after a valid one. The size limit sometimes
    falls between the two lengths, so OVERSIZE is reached too."""
    sv, payload = case
    limit = data.draw(
        st.just(DEFAULT_MAX_BYTES) | st.integers(len(payload), len(payload) + len(extra) + 4),
        label="max_message_bytes",
    )
    rules = dataclasses.replace(RULES, max_message_bytes=limit)
    alone = verdict(TOPIC_OF[sv.subject], key, payload, rules)
    assert isinstance(alone, Accepted) or alone.reason in DOMAIN_REASONS, alone
    appended = verdict(topic, key, payload + extra, rules)
    assert isinstance(appended, Quarantined)
    assert appended.reason is appended_reason(sv, topic, len(payload + extra), rules)


@FUZZ
@given(topic=st.sampled_from(TOPICS), data=st.data(), extra=st.binary(min_size=1, max_size=30))
def test_accepted_record_with_bytes_appended_is_trailing_bytes(
    topic: str, data: st.DataObject, extra: bytes
) -> None:
    _, payload = data.draw(acceptable_payloads(topic), label="payload")
    assert isinstance(verdict(topic, None, payload), Accepted)
    appended = verdict(topic, None, payload + extra)
    assert isinstance(appended, Quarantined) and appended.reason is ReasonCode.TRAILING_BYTES


# --- (c) the batch pipeline over fuzzed files ---------------------------------------------


class Built(NamedTuple):
    """A corpus message and how it was made: "valid", "repeat" (another delivery of a
    valid one), "random" (bytes from nowhere) or a mutation op applied to `base`."""

    message: RawMessage
    kind: str
    base: RawMessage | None


JURISDICTIONS = ("RU", "DE", "EU", "IN", "AU", "ZZ")


def valid_events(rnd: random.Random) -> list[RequestEvent | ActionEvent]:
    """Requests, withdrawals and actions on 25 pieces of content over 60 days of 2021; an
    action that names a request is on its content and not before it."""
    events: list[RequestEvent | ActionEvent] = []
    requests: list[tuple[str, int]] = []  # (content, hours) of request n
    for n in range(70):
        content, hours = f"c{rnd.randrange(25)}", rnd.randrange(24 * 60)
        requests.append((content, hours))
        r = request(
            n,
            content=content,
            hours=hours,
            category=rnd.choice(list(Category)),
            jurisdiction=rnd.choice(JURISDICTIONS),
        )
        events.append(r)
        if rnd.random() < 0.1:
            events.append(
                dataclasses.replace(
                    r,
                    event_id=f"{r.event_id}-w",
                    event_type=RequestEventType.WITHDRAWN,
                    withdrawn_at=r.issued_at + timedelta(hours=rnd.randrange(1, 200)),
                )
            )
    for n in range(45):
        kind = rnd.choice(list(ActionType))
        scoped = kind is ActionType.RESTRICTED or rnd.random() < 0.3
        content, hours, named = f"c{rnd.randrange(25)}", rnd.randrange(24 * 60), None
        if rnd.random() < 0.3:
            named = rnd.randrange(len(requests))
            content, issued = requests[named]
            hours = issued + rnd.randrange(24 * 10)
        events.append(
            action(
                n,
                content=content,
                hours=hours,
                kind=kind,
                jurisdiction=rnd.choice(JURISDICTIONS) if scoped else None,
                request_id=None if named is None else f"R{named}",
            )
        )
    return events


def encode_event(rnd: random.Random, e: RequestEvent | ActionEvent) -> RawMessage:
    """`e` in a random framing; an issued request sometimes in the old v1 schema."""
    topic = REQUESTS_TOPIC if isinstance(e, RequestEvent) else ACTIONS_TOPIC
    subject = SUBJECTS[topic]
    record = e.to_avro()
    version = None
    issued = isinstance(e, RequestEvent) and e.event_type is RequestEventType.ISSUED
    if issued and rnd.random() < 0.2:
        version = 1
        v1 = STORE.version(subject, 1).schema
        record = {f["name"]: record[f["name"]] for f in v1["fields"]}
    framing = rnd.choice(list(FRAMINGS))
    value = FRAMINGS[framing](record, subject, STORE, version)
    return RawMessage(topic, f"{e.platform}/{e.content_id}".encode(), value)


def fuzz_corpus(seed: int) -> list[Built]:
    """About 410 messages in random order: about 120 valid (some in schema v1), 15 repeat
    deliveries, 250 damaged copies of valid ones (mostly on their own topic, some on the
    other or an unknown one) and 25 of random bytes."""
    rnd = random.Random(seed)
    valid = [encode_event(rnd, e) for e in valid_events(rnd)]
    corpus = [Built(m, "valid", None) for m in valid]
    corpus += [Built(m, "repeat", m) for m in rnd.sample(valid, 15)]
    for _ in range(250):
        base, partner = rnd.choice(valid), rnd.choice(valid)
        mutation = random_mutation(rnd)
        roll = rnd.random()
        other = ACTIONS_TOPIC if base.topic == REQUESTS_TOPIC else REQUESTS_TOPIC
        topic = base.topic if roll < 0.85 else other if roll < 0.97 else "removal.unknown"
        value = mutate(mutation, base.value, partner.value)
        corpus.append(Built(RawMessage(topic, base.key, value), mutation.op, base))
    for _ in range(25):
        noise = RawMessage(rnd.choice(TOPICS), None, rnd.randbytes(rnd.randrange(120)))
        corpus.append(Built(noise, "random", None))
    rnd.shuffle(corpus)
    return corpus


def expected_landing(
    verdicts: dict[SourceRef, Accepted | Quarantined],
) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """(landed refs, quarantined ref -> reason, duplicate ref -> kept ref) by the batch
    rules: each message's intake verdict, then per (topic, event_id) the first accepted
    delivery by (file, index) lands, an identical later one is a duplicate, a different
    one an EVENT_ID_CONFLICT."""
    landed: set[str] = set()
    quarantined: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    first: dict[tuple[bool, str], Accepted] = {}
    for origin in sorted(verdicts, key=lambda o: (o.source, o.position)):
        v = verdicts[origin]
        if isinstance(v, Quarantined):
            quarantined[origin.ref] = v.reason.value
            continue
        kept = first.setdefault((isinstance(v.event, RequestEvent), v.event.event_id), v)
        if kept is v:
            landed.add(origin.ref)
        elif kept.event == v.event:
            duplicates[origin.ref] = kept.origin.ref
        else:
            quarantined[origin.ref] = ReasonCode.EVENT_ID_CONFLICT.value
    return landed, quarantined, duplicates


def query(database: Path, sql: str) -> list[dict[str, Any]]:
    con = connect_auditor(database)
    try:
        columns, rows = run_sql(con, sql)
    finally:
        con.close()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def assert_exactly_one_record(payload: bytes, topic: str) -> None:
    """The payload decodes, fastavro's reader ends where it ends, and no shorter prefix of
    it decodes (which is what "a record followed by trailing bytes" would be)."""
    decoded = decode(payload, SUBJECTS[topic], STORE)
    assert body_end(payload, decoded.writer) == len(payload)
    for length in range(len(payload)):
        with pytest.raises(DecodeError):
            decode(payload[:length], SUBJECTS[topic], STORE)


@pytest.mark.slow
@settings(
    max_examples=2,  # each is a whole pipeline run; the first is seed 0 (hypothesis starts simple)
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink would rerun it many times
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_batch_over_fuzzed_files(seed: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    corpus = fuzz_corpus(seed)
    root = tmp_path_factory.mktemp("fuzzed")
    halves = {"a.avro": corpus[: len(corpus) // 2], "b.avro": corpus[len(corpus) // 2 :]}
    built: dict[SourceRef, Built] = {}
    for name, part in halves.items():
        write_raw_messages(root / name, [b.message for b in part], STORE)
        built.update({SourceRef(name, i): b for i, b in enumerate(part)})

    # The data-quality gate is off: a mutant that is exactly one record and passes intake
    # may still break a data expectation (an action dated before the request it names),
    # and holding such a batch is the gate's job, tested with the gate. Here every
    # message's fate must be decided by intake and deduplication alone.
    config = Settings(database=root / "audit.duckdb", quality_gate=False)
    report = run_batch([root / name for name in halves], config, now=NOW)
    assert report.balanced and report.records_in == len(corpus), report

    # The pipeline's verdicts are intake's verdicts, message by message, then deduplication.
    rules = IntakeRules(
        now=NOW,
        max_clock_skew_seconds=config.max_clock_skew_seconds,
        oldest_plausible=config.oldest_plausible,
        max_message_bytes=config.max_message_bytes,
    )
    verdicts = {o: take_in(b.message, o, STORE, rules) for o, b in built.items()}
    for origin, b in built.items():
        if b.message.topic in TOPICS:
            check_intake(b.message, origin, verdicts[origin], STORE, rules)
        if b.kind in ("valid", "repeat"):
            assert isinstance(verdicts[origin], Accepted), verdicts[origin]
    landed_refs, quarantined, duplicates = expected_landing(verdicts)

    events = query(
        config.database,
        "SELECT * FROM request_events UNION ALL BY NAME SELECT * FROM action_events",
    )
    q_rows = query(config.database, "SELECT * FROM quarantine")
    d_rows = query(config.database, "SELECT * FROM duplicate_deliveries")
    assert {r["source_ref"] for r in events} == landed_refs
    assert len(events) == len(landed_refs) == report.landed
    assert {r["source_ref"]: r["reason_code"] for r in q_rows} == quarantined
    assert {r["source_ref"]: r["kept_source_ref"] for r in d_rows} == duplicates
    for row in q_rows:  # the dead letters keep the exact bytes
        message = built[SourceRef.parse(row["source_ref"])].message
        assert (row["raw_value"], row["topic"]) == (message.value, message.topic), row

    # Every landed row is its source message's decoded event, from a payload holding
    # exactly one record: a valid message, or a mutant that happens to be one.
    valid_values = {b.message.value for b in built.values() if b.kind == "valid"}
    landed_mutants = 0
    for row in events:
        origin = SourceRef.parse(row["source_ref"])
        message, accepted = built[origin].message, verdicts[origin]
        assert isinstance(accepted, Accepted)
        expected = {**accepted.event.to_avro(), "schema_version": accepted.schema_version}
        assert {k: row[k] for k in expected} == expected
        assert_exactly_one_record(message.value, message.topic)
        landed_mutants += message.value not in valid_values

    # A valid record with anything after it, on its own topic, is refused as such.
    appended = [
        ref
        for ref, b in built.items()
        if b.kind in APPENDING_OPS and b.base is not None and b.message.topic == b.base.topic
    ]
    assert appended, "the corpus should hold appended records"
    assert {quarantined.get(ref.ref) for ref in appended} == {ReasonCode.TRAILING_BYTES.value}
    event(f"landed mutants: {landed_mutants}")


# --- atheris ---------------------------------------------------------------------------

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_intake.py"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris has wheels only for CPython 3.11-3.13 on Linux x86_64 (pyproject.toml)",
)
def test_atheris_harness_finds_nothing(tmp_path: Path) -> None:
    """A bounded coverage-guided run of tests/fuzz/fuzz_intake.py; CI fixes libFuzzer's
    seed as it derandomizes hypothesis, developers' runs explore."""
    flags = ["-runs=20000", "-max_total_time=15", f"-artifact_prefix={tmp_path}/"]
    if os.environ.get("CI"):
        flags.append("-seed=1")
    done = subprocess.run(
        [sys.executable, str(HARNESS), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HARNESS.parents[2],
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs is not None and int(runs.group(1)) >= 1000, done.stderr[-2000:]
    assert not list(tmp_path.iterdir()), "libFuzzer saved a crashing input"

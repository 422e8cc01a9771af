"""The plain-SQL alternative (bench/sql_alternative.sql) computes the pipeline's tables.

On the seed scenario its input is what a faithful floor would land from the same messages:
every delivery of every landed event at its source position (repeats included) and the
quarantined records that still decode (implausible times, missing fields), which the SQL's
own intake checks must drop. The pipeline's tables of the session's `demo` run are the
expected output, compared as bags of rows over every column. Generated edge cases (policy
groups and dates, same-millisecond events, reinstatements, withdrawals) are held against
the lifecycle function itself.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from bench.floor import TABLES as FLOOR_TABLES
from bench.floor import create_tables
from bench.sql_alternative import compare, compute
from connectors.avro_codec import decode
from connectors.duckdb_sink import apply_schema
from connectors.errors import DecodeError
from connectors.schema_store import SchemaStore
from pipelines import rows
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC, SUBJECTS
from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    ActionEvent,
    ActionType,
    AuthorityKind,
    Category,
    RequestEvent,
    RequestEventType,
)
from pipelines.policy import SlaPolicy, SlaRule
from pipelines.settings import Settings
from pipelines.transforms import backlog_deltas, daily_rows, sum_deltas

ALL_TABLES = {"requests", "lifecycle_transitions", "sla_breaches", "backlog_daily"}
_EVENTS = {REQUESTS_TOPIC: "request_events", ACTIONS_TOPIC: "action_events"}


@pytest.fixture(scope="module")
def seed_audit(demo: tuple[Settings, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo's audit database (the session's copy stays untouched)."""
    settings, _ = demo
    copy = tmp_path_factory.mktemp("sql_alternative") / "audit.duckdb"
    shutil.copyfile(settings.database, copy)
    return copy


@pytest.fixture
def seed_floor(seed_audit: Path, store: SchemaStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory floor of the seed's deliveries, the pipeline's database as `audit`."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{seed_audit}' AS audit (READ_ONLY)")
    create_tables(con, store)
    for topic, events in _EVENTS.items():
        _land_deliveries(con, topic, events)
        _land_decodable_quarantine(con, topic, store)
    yield con
    con.close()


def _land_deliveries(con: duckdb.DuckDBPyConnection, topic: str, events: str) -> None:
    """Each landed event once per delivery: where it was kept and where it was repeated."""
    ((sources,),) = con.execute(
        f"SELECT list(DISTINCT regexp_extract(source_ref, '^(.*)#', 1)) FROM audit.{events}"
    ).fetchall()
    assert len(sources) == 1, "one input file per topic: offsets are its record indexes"
    extra = ", event_time" if events == "request_events" else ""
    con.execute(
        f"""
        INSERT INTO {FLOOR_TABLES[topic]} BY NAME
        WITH deliveries AS (
            SELECT * EXCLUDE (source_ref{extra}), source_ref FROM audit.{events}
            UNION ALL
            SELECT e.* EXCLUDE (source_ref{extra}), d.source_ref
            FROM audit.{events} e
            JOIN audit.duplicate_deliveries d ON d.topic = ? AND d.event_id = e.event_id
        )
        SELECT * EXCLUDE (source_ref), 0 AS kafka_partition,
               regexp_extract(source_ref, '#([0-9]+)$', 1)::BIGINT AS kafka_offset
        FROM deliveries
        """,
        [topic],
    )


def _land_decodable_quarantine(
    con: duckdb.DuckDBPyConnection, topic: str, store: SchemaStore
) -> None:
    """Refused messages that decode (the floor lands them; the SQL must refuse them)."""
    records = []
    for ref, value in con.execute(
        "SELECT source_ref, raw_value FROM audit.quarantine WHERE topic = ?", [topic]
    ).fetchall():
        try:
            decoded = decode(value, SUBJECTS[topic], store)
        except DecodeError:
            continue
        position = int(ref.rpartition("#")[2])
        records.append(
            decoded.record
            | {"schema_version": decoded.writer.version}
            | {"kafka_partition": 0, "kafka_offset": position}
        )
    assert records, f"the seed has decodable quarantined {topic} records"
    _insert(con, FLOOR_TABLES[topic], pa.Table.from_pylist(records))


def _insert(con: duckdb.DuckDBPyConnection, table: str, batch: pa.Table) -> None:
    con.register("incoming", batch)
    try:
        con.execute(f"INSERT INTO {table} BY NAME FROM incoming")
    finally:
        con.unregister("incoming")


def _tables_in(problems: list[str]) -> set[str]:
    return {p.split(":", 1)[0] for p in problems}


def _resolving_action(con: duckdb.DuckDBPyConnection) -> str:
    ((event_id,),) = con.execute(
        "SELECT min(cause_event_id) FROM audit.lifecycle_transitions "
        "WHERE transition = 'RESOLVED' AND cause_event_id LIKE 'ac-%' AND seq = 1"
    ).fetchall()
    return str(event_id)


@pytest.mark.slow
def test_reproduces_the_pipeline_tables_on_the_seed(
    seed_floor: duckdb.DuckDBPyConnection,
) -> None:
    con = seed_floor
    ((deliveries, events),) = con.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM "
        "(SELECT event_id FROM floor_requests UNION ALL SELECT event_id FROM floor_actions)"
    ).fetchall()
    assert deliveries > events  # repeats are there to be removed

    counts = compute(con, Settings())

    assert compare(con, "audit") == []
    expected = {
        f"alt_{t}": con.execute(f"SELECT count(*) FROM audit.{t}").fetchall()[0][0]
        for t in ALL_TABLES
    }
    assert counts == expected and min(counts.values()) > 0


@pytest.mark.slow
def test_a_changed_event_shows_in_every_table(seed_floor: duckdb.DuckDBPyConnection) -> None:
    con = seed_floor
    con.execute(
        "UPDATE floor_actions SET acted_at = acted_at + INTERVAL 30 DAY WHERE event_id = ?",
        [_resolving_action(con)],
    )
    compute(con, Settings())
    assert _tables_in(compare(con, "audit")) == ALL_TABLES


@pytest.mark.slow
def test_dedupe_keeps_the_first_delivery_by_source_position(
    seed_floor: duckdb.DuckDBPyConnection,
) -> None:
    con = seed_floor
    event_id = _resolving_action(con)
    # A conflicting copy delivered later changes nothing (the pipeline quarantines it).
    con.execute(
        """
        INSERT INTO floor_actions
        SELECT * REPLACE (acted_at + INTERVAL 30 DAY AS acted_at,
                          (SELECT max(kafka_offset) + 1 FROM floor_actions) AS kafka_offset)
        FROM floor_actions WHERE event_id = ? LIMIT 1
        """,
        [event_id],
    )
    compute(con, Settings())
    assert compare(con, "audit") == []
    # Positions compare as ("topic/partition" text, offset): partition 10 comes before 2.
    con.execute(
        "UPDATE floor_actions SET kafka_partition = "
        "CASE WHEN acted_at = (SELECT min(acted_at) FROM floor_actions WHERE event_id = $1) "
        "THEN 2 ELSE 10 END WHERE event_id = $1",
        [event_id],
    )
    compute(con, Settings())
    assert "requests" in _tables_in(compare(con, "audit"))


# Generated edge cases, held against the lifecycle function -------------------------------

_START = datetime(2021, 2, 24, tzinfo=UTC)
_JURISDICTIONS = ("RU", "DE", "FR", "EU", "IN", "AU", "US")
_CATEGORIES = (Category.TERRORISM, Category.CHILD_SEXUAL_ABUSE_MATERIAL, Category.FRAUD)
_KINDS = (AuthorityKind.GOVERNMENT, AuthorityKind.REGULATOR)


def _moment(rng: random.Random, around: datetime) -> datetime:
    """Times that collide: the same hour, a deadline and its next millisecond."""
    hours = rng.choice((-2, 0, 0, 1, 3, 24, 36, 168, 200))
    return around + timedelta(hours=hours, milliseconds=rng.choice((0, 0, 1)))


def _generate(rng: random.Random, contents: int) -> tuple[list[RequestEvent], list[ActionEvent]]:
    requests: list[RequestEvent] = []
    actions: list[ActionEvent] = []
    for c in range(contents):
        base = _START + timedelta(days=rng.choice((0, 365, 1300, 1822)), hours=c % 24)
        ids = [f"R{c}-{i}" for i in range(rng.randint(1, 3))]
        for rid in ids:
            issued = _moment(rng, base)
            request = RequestEvent(
                event_id=f"rq-{rid}",
                request_id=rid,
                event_type=RequestEventType.ISSUED,
                authority=rng.choice(("Roskomnadzor", "MeitY")),
                authority_kind=rng.choice(_KINDS),
                jurisdiction=rng.choice(_JURISDICTIONS),
                platform="twitter",
                content_id=f"c{c}",
                content_type="POST",
                category=rng.choice(_CATEGORIES),
                legal_basis="law",
                requested_action="REMOVE",
                issued_at=issued,
            )
            requests.append(request)
            if rng.random() < 0.15:  # re-sent under the same request_id
                resent = _moment(rng, base)
                requests.append(
                    dataclasses.replace(request, event_id=f"rq-{rid}-again", issued_at=resent)
                )
            if rng.random() < 0.2:
                requests.append(
                    dataclasses.replace(
                        request,
                        event_id=f"wd-{rid}",
                        event_type=RequestEventType.WITHDRAWN,
                        withdrawn_at=_moment(rng, issued),
                    )
                )
        for a in range(rng.randint(0, 6)):
            actions.append(
                ActionEvent(
                    event_id=f"ac-{c}-{rng.randint(0, 9)}{a}",
                    action_id=f"A{c}-{a}",
                    request_id=rng.choice((None, None, *ids)),
                    platform="twitter",
                    content_id=f"c{c}",
                    action=rng.choice(tuple(ActionType)),
                    jurisdiction=rng.choice((None, "RU", "DE", "FR")),
                    acted_at=_moment(rng, base),
                )
            )
    actions = [a for a in actions if a.action is not ActionType.RESTRICTED or a.jurisdiction]
    return requests, actions


def _expected(
    requests: list[RequestEvent], actions: list[ActionEvent], policy: SlaPolicy
) -> dict[str, list[rows.Row]]:
    """The pipeline's rows, from the same functions its transforms call."""
    by_content: dict[tuple[str, str], tuple[list[RequestEvent], list[ActionEvent]]] = defaultdict(
        lambda: ([], [])
    )
    for r in requests:
        by_content[r.content_key][0].append(r)
    for a in actions:
        by_content[a.content_key][1].append(a)
    lifecycles = [
        lc for rs, acts in by_content.values() for lc in content_lifecycle(rs, acts, policy)
    ]
    per_day: dict[tuple[str, str, str, int], Any] = defaultdict(lambda: (0, 0, 0))
    for lc in lifecycles:
        for key, deltas in backlog_deltas(lc):
            per_day[key] = sum_deltas([per_day[key], deltas])
    series: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for (category, platform, authority, day), deltas in per_day.items():
        series[(category, platform, authority)].append((day, deltas))
    breaches = [rows.breach_row(lc) for lc in lifecycles]
    return {
        "requests": [rows.request_row(lc) for lc in lifecycles],
        "lifecycle_transitions": [t for lc in lifecycles for t in rows.transition_rows(lc)],
        "sla_breaches": [b for b in breaches if b is not None],
        "backlog_daily": [r for item in series.items() for r in daily_rows(item)],
    }


def _policy_with_a_tie(default_sla: timedelta) -> SlaPolicy:
    """The packaged table plus a rule as strict as RU's 24 h, more specific, later by id
    and closed in 2023: it binds only for MeitY's RU requests issued before then."""
    packaged = SlaPolicy.load(default_sla=default_sla)
    tie = SlaRule(
        id="Z-RU-MeitY",
        jurisdiction="RU",
        authority="MeitY",
        categories=("*",),
        sla=timedelta(hours=24),
        effective_from=datetime(2012, 11, 1, tzinfo=UTC),
        effective_to=datetime(2023, 1, 1, tzinfo=UTC),
        law="test",
        note="",
    )
    return dataclasses.replace(packaged, rules=(*packaged.rules, tie))


def test_matches_the_lifecycle_function_on_generated_edge_cases(store: SchemaStore) -> None:
    rng = random.Random(6)
    requests, actions = _generate(rng, contents=600)
    settings = Settings(max_clock_skew_seconds=10**10, default_sla_hours=48)
    policy = _policy_with_a_tie(settings.default_sla)
    con = duckdb.connect()
    try:
        create_tables(con, store)
        deliveries = {
            "floor_requests": [e.to_avro() | {"schema_version": 2} for e in requests],
            "floor_actions": [e.to_avro() | {"schema_version": 1} for e in actions],
        }
        for table, records in deliveries.items():
            repeated = records + rng.sample(records, len(records) // 10)
            batch = pa.Table.from_pylist(
                [r | {"kafka_partition": 0, "kafka_offset": i} for i, r in enumerate(repeated)]
            )
            _insert(con, table, batch)
        con.execute("ATTACH ':memory:' AS expected")  # the pipeline's tables, as its DDL says
        con.execute("USE expected")
        apply_schema(con)
        con.execute("USE memory")
        for table, expected_rows in _expected(requests, actions, policy).items():
            batch = pa.Table.from_pylist(expected_rows, rows.SCHEMAS[table])
            _insert(con, f"expected.{table}", batch)

        compute(con, settings, policy)

        assert compare(con, "expected") == []
        rules = con.execute("SELECT list(DISTINCT sla_rule_id) FROM alt_requests").fetchall()
        assert set(rules[0][0]) >= {"DEFAULT", "EU-TCO-2021-784-art3", "IN-ITR-3-1-d-GSR120E"}
        assert "Z-RU-MeitY" in rules[0][0]  # the tie goes to the more specific rule
        kinds = con.execute("SELECT list(DISTINCT transition) FROM alt_lifecycle_transitions")
        assert set(kinds.fetchall()[0][0]) >= {"REOPENED", "WITHDRAWN", "BREACHED", "RESOLVED_LATE"}
    finally:
        con.close()

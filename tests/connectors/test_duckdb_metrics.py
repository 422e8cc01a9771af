"""read_metrics: on the seed database against the published figures and independent SQL, and
on small hand-made databases for the edges (withdrawals, alert windows, holds, outbox, empty)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors.duckdb_metrics import AlertsFiring, LabelFigures, MetricsState, read_metrics
from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_sink import connect_writer
from connectors.errors import ReasonCode
from pipelines.settings import Settings

PUBLISHED_AS_OF = datetime(2021, 3, 1, tzinfo=UTC)
T0 = datetime(2021, 2, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# ---------------------------------------------------------------------------- seed database


@pytest.fixture(scope="module")
def seed(demo: tuple[Settings, str]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_auditor(demo[0].database)
    yield con
    con.close()


def _by_category(state: MetricsState) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for f in state.requests:
        totals[f.category] += f.unresolved
    return dict(totals)


def test_the_record_account_of_the_seed(seed: duckdb.DuckDBPyConnection) -> None:
    state = read_metrics(seed)
    assert (state.records_in, state.landed, state.duplicates) == (63_281, 62_672, 590)
    quarantined = dict(state.quarantined)
    assert sum(quarantined.values()) == 19
    by_sql = dict(
        seed.execute("SELECT reason_code, count(*) FROM quarantine GROUP BY 1").fetchall()
    )
    assert {r: n for r, n in quarantined.items() if n} == by_sql
    assert set(quarantined) == {code.value for code in ReasonCode}
    assert state.records_in == state.landed + state.duplicates + sum(quarantined.values())
    loaded_at = seed.execute("SELECT max(loaded_at) FROM load_ledger").fetchall()[0][0]
    assert state.last_landed_at == loaded_at


def test_as_of_1_march_2021_gives_the_figures_roskomnadzor_published(
    seed: duckdb.DuckDBPyConnection,
) -> None:
    state = read_metrics(seed, as_of=PUBLISHED_AS_OF)
    assert state.as_of == PUBLISHED_AS_OF
    unresolved = _by_category(state)
    assert sum(unresolved.values()) == 2_862
    assert unresolved["SUICIDE_PROMOTION"] == 2_336
    assert unresolved["CHILD_SEXUAL_ABUSE_MATERIAL"] == 352
    assert unresolved["DRUGS"] == 174
    assert sum(f.issued for f in state.requests) > 28_000


def test_at_the_horizon_every_figure_equals_independent_sql(
    seed: duckdb.DuckDBPyConnection,
) -> None:
    state = read_metrics(seed)
    horizon = seed.execute(
        "SELECT greatest((SELECT max(event_time) FROM request_events), "
        "(SELECT max(acted_at) FROM action_events))"
    ).fetchall()[0][0]
    assert state.as_of == state.horizon == horizon
    expected: dict[tuple[str, str, str], dict[str, int]] = {}
    for c, p, a, status, n in seed.execute(
        "SELECT category, platform, authority, status, count(*) "
        "FROM request_status_as_of(?) GROUP BY ALL",
        [horizon],
    ).fetchall():
        figures = expected.setdefault((c, p, a), Counter())
        figures[status] += n
        figures["issued"] += n
    for c, p, a, n in seed.execute(
        "SELECT category, platform, authority, count(*) FROM sla_breaches "
        "WHERE breached_at <= ? GROUP BY ALL",
        [horizon],
    ).fetchall():
        expected[(c, p, a)]["breaches"] = n
    # Deadlines due, counted in Python from the requests' own times.
    for c, p, a, deadline, withdrawn in seed.execute(
        "SELECT category, platform, authority, deadline_at, withdrawn_at FROM requests"
    ).fetchall():
        withdrawn_in_time = withdrawn is not None and withdrawn <= deadline
        if deadline + MS <= horizon and not withdrawn_in_time:
            expected[(c, p, a)]["due"] += 1
    got = {
        (f.category, f.platform, f.authority): {
            "OPEN": f.open,
            "OVERDUE": f.overdue,
            "DECLINED": f.declined,
            "issued": f.issued,
            "breaches": f.breaches,
            "due": f.deadlines_due,
        }
        for f in state.requests
    }
    assert got.keys() == expected.keys()
    for labels, figures in got.items():
        for name, value in figures.items():
            assert value == expected[labels][name], (labels, name)
    unresolved = dict(
        seed.execute(
            "SELECT category, count(*) FROM request_status_as_of(?) WHERE unresolved GROUP BY 1",
            [horizon],
        ).fetchall()
    )
    for f in state.requests:
        assert f.open + f.overdue + f.declined == f.unresolved == unresolved.get(f.category, 0)


# ------------------------------------------------------------------------ hand-made databases


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[tuple[Any, ...]]
) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    con.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


# Six requests, SLA 24 h: R1 withdrawn before its deadline; R2 breached, then withdrawn; R3
# never answered; R4 removed in time; R5 declined (breached); R6 (DRUGS) issued at 47 h.
# request_id, category, issued_at, withdrawn_at, disposition at the breach (None: no breach)
TINY_REQUESTS = [
    ("R1", "SUICIDE_PROMOTION", h(0), h(2), None),
    ("R2", "SUICIDE_PROMOTION", h(0), h(30), "OPEN"),
    ("R3", "SUICIDE_PROMOTION", h(0), None, "OPEN"),
    ("R4", "SUICIDE_PROMOTION", h(1), None, None),
    ("R5", "SUICIDE_PROMOTION", h(1), None, "DECLINED"),
    ("R6", "DRUGS", h(47), None, None),
]
# request_id, transition, transition_at, disposition (in order)
TINY_TRANSITIONS = [
    ("R1", "OPENED", h(0), "OPEN"),
    ("R1", "WITHDRAWN", h(2), "WITHDRAWN"),
    ("R2", "OPENED", h(0), "OPEN"),
    ("R2", "BREACHED", h(24) + MS, "OPEN"),
    ("R2", "WITHDRAWN", h(30), "WITHDRAWN"),
    ("R3", "OPENED", h(0), "OPEN"),
    ("R3", "BREACHED", h(24) + MS, "OPEN"),
    ("R4", "OPENED", h(1), "OPEN"),
    ("R4", "RESOLVED", h(2), "RESOLVED_ON_TIME"),
    ("R5", "OPENED", h(1), "OPEN"),
    ("R5", "DECLINED", h(3), "DECLINED"),
    ("R5", "BREACHED", h(25) + MS, "DECLINED"),
    ("R6", "OPENED", h(47), "OPEN"),
]
# The tables' other columns, derived from the rows above.
TINY_SQL = [
    """INSERT INTO requests BY NAME
    SELECT request_id, 'ev-' || request_id AS event_id, 'twitter' AS platform,
           'c-' || request_id AS content_id, 'Roskomnadzor' AS authority,
           'REGULATOR' AS authority_kind, 'RU' AS jurisdiction, category,
           'POST' AS content_type, '149-FZ' AS legal_basis, 'REMOVE' AS requested_action,
           issued_at, issued_at + INTERVAL 24 HOUR AS deadline_at, 86400 AS sla_seconds,
           'RU-149' AS sla_rule_id, false AS sla_default_used, breach IS NOT NULL AS breached,
           withdrawn_at
    FROM tiny_requests""",
    """INSERT INTO lifecycle_transitions BY NAME
    SELECT request_id || '#' || seq AS transition_id, * FROM tiny_transitions""",
    """INSERT INTO sla_breaches BY NAME
    SELECT request_id, r.platform, r.category, r.authority, r.jurisdiction, r.deadline_at,
           r.deadline_at + INTERVAL 1 MILLISECOND AS breached_at, breach AS disposition_at_breach
    FROM requests AS r JOIN tiny_requests USING (request_id) WHERE breach IS NOT NULL""",
    """INSERT INTO request_events BY NAME
    SELECT kind || '-' || request_id AS event_id, request_id, kind AS event_type, authority,
           authority_kind, jurisdiction, platform, content_id, content_type, category,
           legal_basis, requested_action, issued_at,
           CASE kind WHEN 'WITHDRAWN' THEN withdrawn_at END AS withdrawn_at,
           CASE kind WHEN 'ISSUED' THEN issued_at ELSE withdrawn_at END AS event_time,
           1 AS schema_version, 'requests#' || kind || '-' || request_id AS source_ref
    FROM requests, (VALUES ('ISSUED'), ('WITHDRAWN')) AS e(kind)
    WHERE kind = 'ISSUED' OR withdrawn_at IS NOT NULL""",
    """INSERT INTO action_events BY NAME
    SELECT 'ac-' || request_id AS event_id, 'A-' || request_id AS action_id, request_id,
           platform, content_id, action, acted_at, 1 AS schema_version,
           'actions#' || request_id AS source_ref
    FROM requests JOIN (VALUES ('R4', 'REMOVED', ?::TIMESTAMPTZ), ('R5', 'DECLINED', ?))
         AS a(request_id, action, acted_at) USING (request_id)""",
]


def _alert(
    con: duckdb.DuckDBPyConnection,
    alert_id: str,
    rule: str,
    severity: str,
    fired: datetime,
    resolved: datetime | None,
) -> None:
    con.execute(
        "INSERT INTO alerts (alert_id, rule, severity, labels, summary, evidence, runbook, "
        "fired_at, resolved_at) VALUES (?, ?, ?, '{}', ?, '{}', '', ?, ?)",
        [alert_id, rule, severity, rule, fired, resolved],
    )


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_writer(tmp_path / "tiny.duckdb")
    yield con
    con.close()


@pytest.fixture
def tiny(empty: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The six requests of TINY_REQUESTS, their lifecycles, breaches and events, and two
    actions (R4 removed at 2 h, R5 declined at 3 h)."""
    con = empty
    con.execute(
        "CREATE TEMP TABLE tiny_requests (request_id VARCHAR, category VARCHAR, "
        "issued_at TIMESTAMPTZ, withdrawn_at TIMESTAMPTZ, breach VARCHAR)"
    )
    con.executemany("INSERT INTO tiny_requests VALUES (?, ?, ?, ?, ?)", TINY_REQUESTS)
    con.execute(
        "CREATE TEMP TABLE tiny_transitions (request_id VARCHAR, seq INTEGER, "
        "transition VARCHAR, transition_at TIMESTAMPTZ, disposition VARCHAR)"
    )
    con.executemany(
        "INSERT INTO tiny_transitions VALUES (?, ?, ?, ?, ?)",
        [(r, seq, *rest) for seq, (r, *rest) in enumerate(TINY_TRANSITIONS)],
    )
    for sql in TINY_SQL[:-1]:
        con.execute(sql)
    con.execute(TINY_SQL[-1], [h(2), h(3)])
    return con


def _figures(state: MetricsState) -> dict[str, LabelFigures]:
    return {f.category: f for f in state.requests}


def test_request_figures_by_label_set(tiny: duckdb.DuckDBPyConnection) -> None:
    state = read_metrics(tiny)  # as of the horizon: R6 issued at 47 h
    assert state.as_of == state.horizon == h(47)
    figures = _figures(state)
    # issued, open, overdue, declined, deadlines due, breaches
    assert figures["SUICIDE_PROMOTION"][3:] == (5, 0, 1, 1, 4, 3)
    assert figures["DRUGS"][3:] == (1, 1, 0, 0, 0, 0)
    assert figures["DRUGS"][:3] == ("DRUGS", "twitter", "Roskomnadzor")
    assert state.landed == 6 + 2 + 2  # issued and withdrawn events, actions


def test_a_request_withdrawn_before_its_deadline_is_never_due(
    tiny: duckdb.DuckDBPyConnection,
) -> None:
    # R1, R2 and R3 fall due 1 ms after 24 h; R2 was withdrawn after its deadline, R1 before.
    at_deadline = _figures(read_metrics(tiny, as_of=h(24)))
    assert at_deadline["SUICIDE_PROMOTION"].deadlines_due == 0
    assert at_deadline["SUICIDE_PROMOTION"].breaches == 0
    assert "DRUGS" not in at_deadline  # no DRUGS request issued yet
    just_after = _figures(read_metrics(tiny, as_of=h(24) + MS))["SUICIDE_PROMOTION"]
    assert (just_after.deadlines_due, just_after.breaches) == (2, 2)
    assert (just_after.open, just_after.overdue, just_after.declined) == (0, 2, 1)
    later = _figures(read_metrics(tiny, as_of=h(100)))["SUICIDE_PROMOTION"]
    assert later.deadlines_due == 4  # R2, R3, R4, R5: never R1


def test_alerts_firing_counts_unresolved_episodes_and_as_of_windows(
    tiny: duckdb.DuckDBPyConnection,
) -> None:
    _alert(tiny, "a1", "backlog_spike", "warning", h(10), h(20))
    _alert(tiny, "a2", "backlog_spike", "warning", h(30), None)
    _alert(tiny, "a3", "deadline_breach", "critical", h(5), None)
    _alert(tiny, "a4", "deadline_breach", "critical", h(1), h(3))
    _alert(tiny, "a5", "batch_held", "critical", h(40), h(41))

    def firing(as_of: datetime | None) -> dict[str, int]:
        state = read_metrics(tiny, as_of=as_of)
        assert all(isinstance(a, AlertsFiring) for a in state.alerts_firing)
        return {f"{a.rule}/{a.severity}": a.firing for a in state.alerts_firing}

    now = {"backlog_spike/warning": 1, "deadline_breach/critical": 1, "batch_held/critical": 0}
    assert firing(None) == now
    assert firing(h(2)) == {**now, "backlog_spike/warning": 0}  # a4 only
    assert firing(h(15)) == {**now, "deadline_breach/critical": 1}  # a1, a3
    assert firing(h(20))["backlog_spike/warning"] == 0  # a1 resolved at 20 h
    assert firing(h(40.5))["batch_held/critical"] == 1
    assert firing(h(0)) == dict.fromkeys(now, 0)


def test_held_batches_and_pending_notifications(tiny: duckdb.DuckDBPyConnection) -> None:
    holds = enumerate(["HELD", "HELD", "RELEASED", "ACCEPTED"])
    _insert(
        tiny,
        "batch_holds",
        "batch_id, path, validation_id, failed_suites, held_at, status",
        [(f"b{n}", "stream", "v", "requests", h(n), status) for n, status in holds],
    )
    _alert(tiny, "a1", "backlog_spike", "warning", h(10), None)
    _alert(tiny, "a2", "backlog_spike", "warning", h(1), h(2))
    outbox = [
        ("a1", "firing", "kafka", None),
        ("a2", "resolved", "kafka", None),
        ("a2", "firing", "kafka", h(1)),
        ("a1", "firing", "webhook", h(11)),
    ]
    _insert(
        tiny,
        "alert_notifications",
        "notification_id, alert_id, status, sink, created_at, attempts, next_attempt_at, "
        "delivered_at",
        [(f"{a}:{st}:{sink}", a, st, sink, h(10), 1, h(10), at) for a, st, sink, at in outbox],
    )
    state = read_metrics(tiny)
    assert state.batches_held == 2
    assert dict(state.notifications_pending) == {"kafka": 2, "webhook": 0}


def test_records_in_comes_from_the_current_load_or_the_stream_ledger(
    tiny: duckdb.DuckDBPyConnection,
) -> None:
    _insert(
        tiny,
        "quarantine",
        "quarantine_id, topic, source_ref, reason_code, message, raw_value",
        [
            (f"q{n}", "removal.requests", f"q{n}", reason, "refused", b"\x00")
            for n, reason in enumerate(["TRUNCATED", "OVERSIZE", "OVERSIZE"])
        ],
    )
    _insert(
        tiny,
        "duplicate_deliveries",
        "source_ref, topic, event_id, kept_source_ref",
        [("d0", "removal.actions", "ac-R4", "actions#R4")],
    )
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    _insert(
        tiny,
        "load_ledger",
        "run_id, inputs, policy_version, pipeline_version, records_in, landed, duplicates, "
        "quarantined, loaded_at",
        [
            (run, "[]", "p", "0", n, 10, 1, 3, at)
            for run, n, at in [("old", 100, wall), ("new", 14, wall + timedelta(days=1))]
        ],
    )
    # The tables hold the load current_load names: the one landed last, or an earlier one
    # replayed since (its account, not the last first landing's).
    tiny.execute("INSERT INTO current_load VALUES ('old', ?)", [wall + timedelta(days=2)])
    assert read_metrics(tiny).records_in == 100
    tiny.execute("UPDATE current_load SET run_id = 'new'")
    batch = read_metrics(tiny)
    assert (batch.records_in, batch.landed, batch.duplicates) == (14, 10, 1)
    assert {r: n for r, n in batch.quarantined if n} == {"OVERSIZE": 2, "TRUNCATED": 1}
    assert batch.last_landed_at == wall + timedelta(days=1)

    def ledger(batch_id: str, first: int, last: int, committed: datetime) -> None:
        offsets = [{"topic": "removal.requests", "partition": 0, "first": first, "last": last}]
        _insert(
            tiny,
            "batch_ledger",
            "batch_id, offsets, row_counts, committed_at",
            [(batch_id, json.dumps(offsets), "{}", committed)],
        )

    ledger("b1", 0, 9, wall + timedelta(days=2))
    ledger("b2", 5, 13, wall + timedelta(days=3))  # overlaps b1: offsets 0..13 are 14 records
    stream = read_metrics(tiny)
    assert stream.records_in == 14
    assert stream.last_landed_at == wall + timedelta(days=3)


def test_an_empty_database_gives_zeros(empty: duckdb.DuckDBPyConnection) -> None:
    for as_of in (None, h(0)):
        state = read_metrics(empty, as_of=as_of)
        assert state.requests == () and state.alerts_firing == ()
        assert (state.records_in, state.landed, state.duplicates, state.batches_held) == (0,) * 4
        assert all(n == 0 for _, n in state.quarantined)
        assert state.horizon is None and state.last_landed_at is None
        assert state.as_of == as_of
        assert state.notifications_pending == () and state.consumer_lag == ()


def test_a_database_made_before_the_alert_tables_is_still_read(
    tiny: duckdb.DuckDBPyConnection,
) -> None:
    for table in ("alert_notifications", "alerts", "batch_holds"):
        tiny.execute(f"DROP TABLE {table}")
    state = read_metrics(tiny)
    assert state.alerts_firing == () and state.notifications_pending == ()
    assert state.batches_held == 0
    assert sum(f.issued for f in state.requests) == 6


def test_lag_is_carried_and_a_naive_as_of_refused(empty: duckdb.DuckDBPyConnection) -> None:
    lag = {("p.removal.requests", 1): 7, ("p.removal.actions", 0): 0}
    state = read_metrics(empty, lag=lag)
    assert [tuple(x) for x in state.consumer_lag] == [
        ("p.removal.actions", 0, 0),
        ("p.removal.requests", 1, 7),
    ]
    with pytest.raises(ValueError, match="timezone-aware"):
        read_metrics(empty, as_of=datetime(2021, 3, 1))

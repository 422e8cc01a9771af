"""The seed scenario: deterministic Avro files whose events reproduce the published figures.

The figures are recomputed here from the files alone (decode, drop what a pipeline must
quarantine, run the lifecycle function per content), not with the generator's own check.
"""

from __future__ import annotations

import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from connectors.avro_codec import decode
from connectors.avro_files import RawMessage, read_raw_messages
from connectors.errors import DecodeError, ReasonCode
from connectors.schema_store import SchemaStore
from pipelines.lifecycle import content_lifecycle
from pipelines.model import (
    UNRESOLVED,
    ActionEvent,
    ActionType,
    AuthorityKind,
    RequestEvent,
    RequestEventType,
    RequestLifecycle,
)
from pipelines.policy import SlaPolicy
from pipelines.scenarios.generator import SCENARIOS, GeneratedScenario, generate

SCENARIO = "roskomnadzor-twitter-2021"
SEED = 2021
SUBJECTS = {
    "removal.requests": "removal.requests-value",
    "removal.actions": "removal.actions-value",
}
# What the intake refuses even though it decodes (mirrors the pipeline's defaults).
OLDEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
BYTE_FAULTS = {
    "truncated": ReasonCode.TRUNCATED,
    "trailing_bytes": ReasonCode.TRAILING_BYTES,
    "unknown_fingerprint": ReasonCode.UNKNOWN_FINGERPRINT,
}

Event = RequestEvent | ActionEvent


@dataclass(frozen=True)
class Delivered:
    """One message of a file, decoded (event, writer version) or refused (error)."""

    message: RawMessage
    event: Event | None
    writer_version: int | None
    error: DecodeError | None


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return tomllib.loads(SCENARIOS[SCENARIO].read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedScenario:
    return generate(SCENARIO, tmp_path_factory.mktemp("seed"), seed=SEED)


@pytest.fixture(scope="module")
def delivered(generated: GeneratedScenario, store: SchemaStore) -> dict[str, list[Delivered]]:
    """Both files' messages in file order, keyed by topic."""
    out: dict[str, list[Delivered]] = {}
    for topic, path in (
        ("removal.requests", generated.requests_path),
        ("removal.actions", generated.actions_path),
    ):
        rows: list[Delivered] = []
        for _, message in read_raw_messages(path, store):
            assert message.topic == topic
            try:
                decoded = decode(message.value, SUBJECTS[topic], store)
            except DecodeError as error:
                rows.append(Delivered(message, None, None, error))
                continue
            event: Event = (
                RequestEvent.from_avro(decoded.record)
                if topic == "removal.requests"
                else ActionEvent.from_avro(decoded.record)
            )
            rows.append(Delivered(message, event, decoded.writer.version, None))
        out[topic] = rows
    return out


def _implausible(event: Event) -> bool:
    if event.event_time < OLDEST_PLAUSIBLE:
        return True
    return (
        isinstance(event, ActionEvent)
        and event.action is ActionType.RESTRICTED
        and event.jurisdiction is None
    )


def _events(delivered: dict[str, list[Delivered]], *, keep_implausible: bool) -> list[Event]:
    return [
        row.event
        for rows in delivered.values()
        for row in rows
        if row.event is not None and (keep_implausible or not _implausible(row.event))
    ]


def _lifecycles(events: Iterable[Event]) -> list[RequestLifecycle]:
    policy = SlaPolicy.load()
    by_content: dict[tuple[str, str], tuple[list[RequestEvent], list[ActionEvent]]] = defaultdict(
        lambda: ([], [])
    )
    for event in events:
        if isinstance(event, RequestEvent):
            by_content[event.content_key][0].append(event)
        else:
            by_content[event.content_key][1].append(event)
    return [
        life
        for requests, actions in by_content.values()
        for life in content_lifecycle(requests, actions, policy)
    ]


def _figure_value(figure: dict[str, Any], lives: list[RequestLifecycle]) -> int:
    chosen = [
        life
        for life in lives
        if figure["category"] == "ALL" or life.request.category.value == figure["category"]
    ]
    if figure["metric"] == "unresolved":
        return sum(1 for life in chosen if life.status_as_of(figure["as_of"]) in UNRESOLVED)
    assert figure["metric"] == "requests_issued"
    return len(
        {
            life.request.request_id
            for life in chosen
            if figure["since"] <= life.request.issued_at <= figure["as_of"]
        }
    )


def _holds(figure: dict[str, Any], value: int) -> bool:
    published = int(figure["value"])
    if figure["comparison"] == "exactly":
        return value == published
    return value > published


def _file_bytes(result: GeneratedScenario) -> tuple[bytes, bytes]:
    return result.requests_path.read_bytes(), result.actions_path.read_bytes()


def test_same_seed_gives_identical_files(generated: GeneratedScenario, tmp_path: Path) -> None:
    again = generate(SCENARIO, tmp_path, seed=SEED)
    assert _file_bytes(again) == _file_bytes(generated)
    same_paths = replace(
        again, requests_path=generated.requests_path, actions_path=generated.actions_path
    )
    assert same_paths == generated


def test_other_seed_gives_other_files(generated: GeneratedScenario, tmp_path: Path) -> None:
    other = _file_bytes(generate(SCENARIO, tmp_path, seed=SEED + 1))
    mine = _file_bytes(generated)
    assert other[0] != mine[0]
    assert other[1] != mine[1]


def test_published_figures_are_recovered_from_the_files(
    delivered: dict[str, list[Delivered]], spec: dict[str, Any]
) -> None:
    lives = _lifecycles(_events(delivered, keep_implausible=False))
    computed = {f["id"]: _figure_value(f, lives) for f in spec["figure"]}
    missed = {
        f["id"]: computed[f["id"]] for f in spec["figure"] if not _holds(f, computed[f["id"]])
    }
    assert not missed, missed
    exact = [f for f in spec["figure"] if f["comparison"] == "exactly"]
    assert len(exact) == 4
    # The three categories make up the whole backlog: nothing else is unresolved then.
    as_of = exact[0]["as_of"]
    others = Counter(
        life.request.category.value
        for life in lives
        if life.status_as_of(as_of) in UNRESOLVED
        and life.request.category.value not in {f["category"] for f in exact}
    )
    assert not others, others


def test_letting_implausible_events_through_breaks_the_figures(
    delivered: dict[str, list[Delivered]], spec: dict[str, Any]
) -> None:
    lives = _lifecycles(_events(delivered, keep_implausible=True))
    total = next(
        f for f in spec["figure"] if f["comparison"] == "exactly" and f["category"] == "ALL"
    )
    assert _figure_value(total, lives) != total["value"]


def test_malformed_messages_match_the_scenario_file(
    generated: GeneratedScenario, delivered: dict[str, list[Delivered]], spec: dict[str, Any]
) -> None:
    total = 0
    for table, topic in (("requests", "removal.requests"), ("actions", "removal.actions")):
        wanted: dict[str, int] = spec["malformed"][table]
        rows = delivered[topic]
        refused = Counter(row.error.reason for row in rows if row.error is not None)
        assert refused == Counter(
            {BYTE_FAULTS[kind]: n for kind, n in wanted.items() if kind in BYTE_FAULTS}
        )
        events = [row.event for row in rows if row.event is not None]
        old = sum(1 for e in events if e.event_time < OLDEST_PLAUSIBLE)
        assert old == wanted.get("timestamp_1970", 0)
        assert all(e.event_time.year == 1970 for e in events if e.event_time < OLDEST_PLAUSIBLE)
        unplaced = sum(
            1
            for e in events
            if isinstance(e, ActionEvent)
            and e.action is ActionType.RESTRICTED
            and e.jurisdiction is None
        )
        assert unplaced == wanted.get("restricted_without_jurisdiction", 0)
        total += sum(wanted.values())
    assert generated.malformed == total


def test_deliveries_are_late_out_of_order_and_duplicated(
    generated: GeneratedScenario, delivered: dict[str, list[Delivered]]
) -> None:
    duplicates = 0
    for rows in delivered.values():
        arrivals = [row.message.timestamp for row in rows]
        assert all(a is not None for a in arrivals)
        assert arrivals == sorted(arrivals)  # type: ignore[type-var]
        times = [row.event.event_time for row in rows if row.event is not None]
        assert any(later < earlier for earlier, later in pairwise(times))
        seen: dict[bytes, RawMessage] = {}
        for row in rows:
            first = seen.setdefault(row.message.value, row.message)
            if first is not row.message:
                duplicates += 1
                assert row.message.key == first.key
                assert row.message.timestamp is not None and first.timestamp is not None
                assert row.message.timestamp >= first.timestamp
        # Every message is keyed by its content.
        for row in rows:
            if row.event is not None:
                assert row.message.key == f"{row.event.platform}/{row.event.content_id}".encode()
    assert duplicates == generated.duplicates > 0


def test_counts_and_schema_versions(
    generated: GeneratedScenario, delivered: dict[str, list[Delivered]]
) -> None:
    requests = {
        row.event.event_id: row
        for row in delivered["removal.requests"]
        if isinstance(row.event, RequestEvent) and not _implausible(row.event)
    }
    actions = {
        row.event.event_id
        for row in delivered["removal.actions"]
        if row.event is not None and not _implausible(row.event)
    }
    assert len(requests) == generated.valid_requests
    assert len(actions) == generated.valid_actions
    old_schema = [row for row in requests.values() if row.writer_version == 1]
    assert 0.03 < len(old_schema) / len(requests) < 0.07
    for row in old_schema:
        assert isinstance(row.event, RequestEvent)
        assert row.event.event_type is RequestEventType.ISSUED
        assert row.event.authority_kind is AuthorityKind.OTHER
    kinds = Counter(
        row.event.event_type for row in requests.values() if isinstance(row.event, RequestEvent)
    )
    assert kinds[RequestEventType.WITHDRAWN] > 0

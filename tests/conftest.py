"""Shared fixtures: small event sets written as real Avro files, and a real DuckDB file."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import hypothesis
import pytest

from connectors.avro_codec import encode_single_object
from connectors.avro_files import RawMessage, write_raw_messages
from connectors.duckdb_sink import connect_writer
from connectors.schema_store import SchemaStore
from pipelines.model import (
    ActionEvent,
    ActionType,
    AuthorityKind,
    Category,
    RequestEvent,
    RequestEventType,
)
from pipelines.report import run_demo
from pipelines.settings import Settings

# The real Kafka broker (started lazily, only for tests that ask for `kafka_bootstrap`).
pytest_plugins = ["tests.kafka_broker_fixture"]

T0 = datetime(2021, 2, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """`removal-audit demo` once per session: the seed scenario's Avro files (data_dir), the
    batch path's database over them (database) and the report. Tests must not change
    either: copy the database to write to it."""
    root = tmp_path_factory.mktemp("demo")
    settings = Settings(database=root / "audit.duckdb", data_dir=root / "data")
    out = io.StringIO()
    status = run_demo(settings, scenario="roskomnadzor-twitter-2021", seed=2021, out=out)
    assert status == 0, out.getvalue()
    return settings, out.getvalue()


@pytest.fixture
def audit_path(demo: tuple[Settings, str], tmp_path: Path) -> Path:
    """A copy of the seed audit database, `tmp_path / "audit.duckdb"`, for a test that
    changes it."""
    copy = tmp_path / "audit.duckdb"
    shutil.copyfile(demo[0].database, copy)
    return copy


@pytest.fixture
def audit(audit_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writer on `audit_path`; closed after the test."""
    con = connect_writer(audit_path)
    yield con
    con.close()


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    return SchemaStore.load()


def request(
    n: int,
    *,
    content: str = "c1",
    hours: float = 0,
    category: Category = Category.SUICIDE_PROMOTION,
    jurisdiction: str = "RU",
) -> RequestEvent:
    return RequestEvent(
        event_id=f"rq-{n}",
        request_id=f"R{n}",
        event_type=RequestEventType.ISSUED,
        authority="Roskomnadzor",
        authority_kind=AuthorityKind.REGULATOR,
        jurisdiction=jurisdiction,
        platform="twitter",
        content_id=content,
        content_type="POST",
        category=category,
        legal_basis="149-FZ art. 15.1",
        requested_action="REMOVE",
        issued_at=T0 + timedelta(hours=hours),
    )


def action(
    n: int,
    *,
    content: str = "c1",
    hours: float = 0,
    kind: ActionType = ActionType.REMOVED,
    jurisdiction: str | None = None,
    request_id: str | None = None,
) -> ActionEvent:
    return ActionEvent(
        event_id=f"ac-{n}",
        action_id=f"A{n}",
        request_id=request_id,
        platform="twitter",
        content_id=content,
        action=kind,
        jurisdiction=jurisdiction,
        acted_at=T0 + timedelta(hours=hours),
    )


def message(store: SchemaStore, event: RequestEvent | ActionEvent) -> RawMessage:
    if isinstance(event, RequestEvent):
        topic, subject = "removal.requests", "removal.requests-value"
    else:
        topic, subject = "removal.actions", "removal.actions-value"
    key = f"{event.platform}/{event.content_id}".encode()
    return RawMessage(topic, key, encode_single_object(event.to_avro(), subject, store), None)


# CI replays the same examples every run (a landing must not hinge on a random draw);
# developers' runs keep exploring new ones. print_blob lets a CI failure be reproduced.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

# Beam warns at interpreter exit when it stops the shared Prism server; that line would
# otherwise follow pytest's summary and hide it from whoever reads the run's last lines.
logging.getLogger("apache_beam.utils.subprocess_server").setLevel(logging.ERROR)

PRISM_BUILD = Path(__file__).resolve().parents[1] / "docker" / "prism" / "build.py"


@pytest.fixture(scope="session")
def prism_location() -> str:
    """Beam's Prism runner binary, built from the Beam Go module at the SDK's version and
    cached (docker/prism/build.py): the local runner that honours event-time timers."""
    done = subprocess.run(
        [sys.executable, str(PRISM_BUILD)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=1200,
    )
    assert done.returncode == 0, "docker/prism/build.py failed"
    return done.stdout.strip()


WriteFiles = Callable[[Path, Sequence[RawMessage], Sequence[RawMessage]], list[Path]]


@pytest.fixture
def write_files(store: SchemaStore) -> WriteFiles:
    def write(
        directory: Path, requests: Sequence[RawMessage], actions: Sequence[RawMessage]
    ) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "requests.avro", directory / "actions.avro"]
        write_raw_messages(paths[0], requests, store)
        write_raw_messages(paths[1], actions, store)
        return paths

    return write


def read_rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    """The rows of `sql` on a read-only connection of its own to `database`."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@contextlib.contextmanager
def held_by_writer(database: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `database` as DuckDB's writer (as a streaming job does) for
    the time of the block; yields that process."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        yield holder
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)

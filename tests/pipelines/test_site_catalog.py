"""A site schema catalog (settings.schemas_dir) in place of the packaged one: producers
write request v3, which adds a category symbol; the catalog registers v3 and pins the
reader to v2. v3 records with known symbols land (as schema version 3), those with the new
symbol are quarantined as UNKNOWN_ENUM_SYMBOL; nothing else changes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.avro_codec import encode_confluent, encode_single_object
from connectors.avro_files import RawMessage
from connectors.duckdb_reader import connect_auditor, run_sql
from connectors.errors import ReasonCode
from connectors.kafka_source import source_settings
from connectors.origin import SourceRef
from connectors.schema_store import SchemaStore
from pipelines.batch import run_batch
from pipelines.intake import REQUESTS_TOPIC, SUBJECTS, Accepted, IntakeRules, Quarantined, take_in
from pipelines.settings import Settings
from tests.conftest import WriteFiles, action, message, request
from tests.site_catalog import NEW_CATEGORY, write_site_catalog

SUBJECT = SUBJECTS[REQUESTS_TOPIC]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = IntakeRules(NOW, 300, datetime(2000, 1, 1, tzinfo=UTC), 1_048_576)


def v3_message(store: SchemaStore, n: int, category: str, *, confluent: bool = False) -> RawMessage:
    record = {**request(n, content=f"s{n}").to_avro(), "category": category}
    encode = encode_confluent if confluent else encode_single_object
    return RawMessage(REQUESTS_TOPIC, f"twitter/s{n}".encode(), encode(record, SUBJECT, store, 3))


def test_pinned_reader_lands_known_symbols_and_refuses_new_ones(tmp_path: Path) -> None:
    site = SchemaStore.load(write_site_catalog(tmp_path / "site"))
    known = take_in(v3_message(site, 1, "DRUGS"), SourceRef("t/0", 1), site, RULES)
    assert isinstance(known, Accepted)
    assert known.schema_version == 3 and known.event.event_id == "rq-1"
    new = v3_message(site, 2, NEW_CATEGORY, confluent=True)
    refused = take_in(new, SourceRef("t/0", 2), site, RULES)
    assert isinstance(refused, Quarantined)
    assert refused.reason is ReasonCode.UNKNOWN_ENUM_SYMBOL and NEW_CATEGORY in refused.message
    assert (refused.key, refused.value, refused.event_id) == (new.key, new.value, None)
    # The packaged catalog does not know v3 at all.
    packaged = take_in(v3_message(site, 1, "DRUGS"), SourceRef("t/0", 1), SchemaStore.load(), RULES)
    assert isinstance(packaged, Quarantined)
    assert packaged.reason is ReasonCode.UNKNOWN_FINGERPRINT


def test_an_unpinned_newer_reader_still_quarantines_what_the_model_lacks(tmp_path: Path) -> None:
    # Forgetting the pin makes v3 the reader: the symbol decodes, but the domain model has
    # no such category. Intake refuses it with the same reason instead of failing the job.
    site = SchemaStore.load(write_site_catalog(tmp_path / "site", pin_reader=None))
    refused = take_in(v3_message(site, 2, NEW_CATEGORY), SourceRef("t/0", 2), site, RULES)
    assert isinstance(refused, Quarantined)
    assert refused.reason is ReasonCode.UNKNOWN_ENUM_SYMBOL, refused
    assert refused.event_id == "rq-2" and "pin the version" in refused.message
    assert isinstance(
        take_in(v3_message(site, 1, "DRUGS"), SourceRef("t/0", 1), site, RULES), Accepted
    )


def test_the_setting_reaches_the_kafka_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_SCHEMAS_DIR", str(tmp_path / "site"))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.schemas_dir == tmp_path / "site"
    assert source_settings(settings).schemas_dir == tmp_path / "site"
    assert Settings(_env_file=None, schemas_dir=None).schemas_dir is None  # type: ignore[call-arg]


@pytest.mark.slow
def test_batch_run_with_a_site_catalog(
    tmp_path: Path, store: SchemaStore, write_files: WriteFiles
) -> None:
    directory = write_site_catalog(tmp_path / "site")
    site = SchemaStore.load(directory)
    requests = [
        message(store, request(1, content="s1")),
        v3_message(site, 2, "DRUGS"),
        v3_message(site, 3, "TERRORISM", confluent=True),
        v3_message(site, 4, NEW_CATEGORY),
        v3_message(site, 5, NEW_CATEGORY, confluent=True),
    ]
    actions = [message(store, action(1, content="s2", hours=2))]
    inputs = write_files(tmp_path / "in", requests, actions)
    settings = Settings(database=tmp_path / "audit.duckdb", schemas_dir=directory)
    report = run_batch(inputs, settings, now=NOW)  # the quality gate passes schema version 3
    assert (report.landed, report.quarantined, report.balanced) == (4, 2, True)
    con = connect_auditor(settings.database)
    try:
        _, versions = run_sql(
            con, "SELECT event_id, schema_version FROM request_events ORDER BY event_id"
        )
        _, refused = run_sql(
            con, "SELECT source_ref, reason_code FROM quarantine ORDER BY source_ref"
        )
    finally:
        con.close()
    assert versions == [("rq-1", 2), ("rq-2", 3), ("rq-3", 3)]
    assert refused == [
        ("requests.avro#3", "UNKNOWN_ENUM_SYMBOL"),
        ("requests.avro#4", "UNKNOWN_ENUM_SYMBOL"),
    ]

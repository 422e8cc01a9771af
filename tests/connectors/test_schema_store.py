"""SchemaStore: catalog loading, lookups, clash detection, and the CRC-64-AVRO fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors.avro_codec import decode, encode_confluent, encode_single_object
from connectors.errors import DecodeError, ReasonCode
from connectors.schema_store import SchemaCatalogError, SchemaStore, schema_fingerprint
from pipelines.resources import schemas_dir
from tests.conftest import request
from tests.site_catalog import NEW_CATEGORY, V3_REGISTRY_ID, write_site_catalog

REQUESTS = "removal.requests-value"
ACTIONS = "removal.actions-value"
RAW = "raw-message"

# The CRC-64-AVRO algorithm exactly as the Avro specification gives it ("Schema
# Fingerprints"), so the store's fingerprints are checked against the spec rather than
# against fastavro itself.
EMPTY64 = 0xC15D213AA4D7A795


def _spec_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _spec_table()


def spec_crc64_avro(data: bytes) -> int:
    fp = EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def _signed(value: int) -> int:
    return value - 2**64 if value >= 2**63 else value


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load()


def copy_schemas(tmp_path: Path) -> Path:
    """A writable copy of the real schemas directory."""
    target = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), target)
    return target


def write_catalog(directory: Path, subjects: dict[str, list[dict[str, Any]]]) -> None:
    (directory / "catalog.json").write_text(json.dumps({"subjects": subjects}), encoding="utf-8")


def test_spec_algorithm_matches_published_vectors() -> None:
    # The empty input leaves the initial value; the others are from Avro's
    # share/test/data/schema-tests.txt (signed 64-bit, as Java prints them).
    assert spec_crc64_avro(b"") == EMPTY64
    vectors = {
        '"null"': 7195948357588979594,
        '"boolean"': -6970731678124411036,
        '"int"': 8247732601305521295,
        '{"name":"foo","type":"fixed","size":15}': 1756455273707447556,
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}': (
            7843277075252814651
        ),
    }
    for canonical, expected in vectors.items():
        assert _signed(spec_crc64_avro(canonical.encode())) == expected


@pytest.mark.parametrize("text", ["", '"null"', '"int"', '{"name":"foo","type":"fixed","size":15}'])
def test_fingerprint_is_spec_crc64_little_endian(text: str) -> None:
    assert schema_fingerprint(text) == spec_crc64_avro(text.encode()).to_bytes(8, "little")


def test_every_catalog_version_has_its_spec_fingerprint(store: SchemaStore) -> None:
    for subject in store.subjects():
        for sv in store.versions(subject):
            expected = spec_crc64_avro(sv.canonical_form.encode("utf-8")).to_bytes(8, "little")
            assert sv.fingerprint == expected, sv.label
            assert len(sv.fingerprint) == 8


def test_canonical_form_drops_docs_and_uses_full_names(store: SchemaStore) -> None:
    canonical = store.latest(REQUESTS).canonical_form
    assert '"doc"' not in canonical
    assert '"default"' not in canonical
    assert canonical.startswith('{"name":"removal_audit.events.RemovalRequest","type":"record"')
    assert " " not in canonical and "\n" not in canonical


def test_subjects_and_versions(store: SchemaStore) -> None:
    assert store.subjects() == (REQUESTS, ACTIONS, RAW, "removal.alerts-value")
    assert [sv.version for sv in store.versions(REQUESTS)] == [1, 2]
    latest = store.latest(REQUESTS)
    assert (latest.subject, latest.version, latest.registry_id) == (REQUESTS, 2, 3)
    assert store.version(REQUESTS, 1).registry_id == 1
    assert store.latest(ACTIONS).registry_id == 2
    assert store.latest(RAW).registry_id is None
    assert store.latest("removal.alerts-value").registry_id == 4


def test_lookup_by_fingerprint_and_registry_id(store: SchemaStore) -> None:
    for subject in store.subjects():
        for sv in store.versions(subject):
            assert store.by_fingerprint(sv.fingerprint) is sv
            if sv.registry_id is not None:
                assert store.by_registry_id(sv.registry_id) is sv
    assert store.by_fingerprint(b"\x00" * 8) is None
    assert store.by_registry_id(999) is None


def test_versions_are_distinct(store: SchemaStore) -> None:
    v1, v2 = store.versions(REQUESTS)
    assert v1 != v2
    assert v1.fingerprint != v2.fingerprint
    assert len({v1, v2}) == 2  # hashable, usable as keys


def test_unknown_subject_and_version_raise_key_error(store: SchemaStore) -> None:
    with pytest.raises(KeyError, match="nope"):
        store.latest("nope")
    with pytest.raises(KeyError, match="no version 7"):
        store.version(REQUESTS, 7)


def test_doc_like_extra_keys_are_harmless(tmp_path: Path) -> None:
    directory = copy_schemas(tmp_path)
    path = directory / "platform_action" / "v1.avsc"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["_doc"] = "annotation for humans"
    schema["fields"][0]["_doc"] = "another"
    path.write_text(json.dumps(schema), encoding="utf-8")
    reference = SchemaStore.load()
    annotated = SchemaStore.load(directory)
    assert annotated.latest(ACTIONS).fingerprint == reference.latest(ACTIONS).fingerprint


def test_duplicate_fingerprint_is_refused(tmp_path: Path) -> None:
    directory = copy_schemas(tmp_path)
    write_catalog(
        directory,
        {
            REQUESTS: [
                {"version": 1, "registry_id": 1, "file": "removal_request/v2.avsc"},
                {"version": 2, "registry_id": 3, "file": "removal_request/v2.avsc"},
            ]
        },
    )
    with pytest.raises(ValueError, match="same fingerprint"):
        SchemaStore.load(directory)


def test_duplicate_registry_id_is_refused(tmp_path: Path) -> None:
    directory = copy_schemas(tmp_path)
    write_catalog(
        directory,
        {
            REQUESTS: [{"version": 1, "registry_id": 5, "file": "removal_request/v1.avsc"}],
            ACTIONS: [{"version": 1, "registry_id": 5, "file": "platform_action/v1.avsc"}],
        },
    )
    with pytest.raises(ValueError, match="registry id 5"):
        SchemaStore.load(directory)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [
                {"version": 2, "registry_id": 1, "file": "removal_request/v1.avsc"},
                {"version": 1, "registry_id": 3, "file": "removal_request/v2.avsc"},
            ],
            "oldest first",
        ),
        ([{"version": 0, "registry_id": 1, "file": "removal_request/v1.avsc"}], "bad version"),
        ([{"version": 1, "registry_id": -1, "file": "removal_request/v1.avsc"}], "bad registry_id"),
        (
            [{"version": 1, "registry_id": True, "file": "removal_request/v1.avsc"}],
            "bad registry_id",
        ),
        ([{"version": 1, "registry_id": 1, "file": "missing.avsc"}], "missing.avsc"),
        ([], "no schema versions"),
    ],
)
def test_bad_catalog_entries_are_refused(
    tmp_path: Path, entries: list[dict[str, Any]], message: str
) -> None:
    directory = copy_schemas(tmp_path)
    write_catalog(directory, {REQUESTS: entries})
    with pytest.raises(ValueError, match=message):
        SchemaStore.load(directory)


def test_invalid_schema_file_names_the_file(tmp_path: Path) -> None:
    directory = copy_schemas(tmp_path)
    path = directory / "platform_action" / "v1.avsc"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["fields"][0]["type"] = "NoSuchType"
    path.write_text(json.dumps(schema), encoding="utf-8")
    with pytest.raises(ValueError, match=r"v1\.avsc: invalid Avro schema"):
        SchemaStore.load(directory)


def test_missing_or_broken_catalog(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"catalog\.json"):
        SchemaStore.load(tmp_path)
    (tmp_path / "catalog.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        SchemaStore.load(tmp_path)
    (tmp_path / "catalog.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="'subjects'"):
        SchemaStore.load(tmp_path)


# --- the reader pin (catalog.json "readers") -------------------------------------------


def test_without_a_pin_the_reader_is_the_newest_version(store: SchemaStore, tmp_path: Path) -> None:
    for subject in store.subjects():
        assert store.reader(subject) is store.latest(subject)
    unpinned = SchemaStore.load(write_site_catalog(tmp_path / "site", pin_reader=None))
    assert unpinned.reader(REQUESTS).version == unpinned.latest(REQUESTS).version == 3


def test_a_pinned_reader_is_older_than_the_newest_writer(tmp_path: Path) -> None:
    site = SchemaStore.load(write_site_catalog(tmp_path / "site", pin_reader=2))
    reference = SchemaStore.load()
    assert [sv.version for sv in site.versions(REQUESTS)] == [1, 2, 3]
    assert site.latest(REQUESTS).version == 3
    assert site.reader(REQUESTS) == reference.reader(REQUESTS)  # v2, as packaged
    assert site.reader(ACTIONS) == reference.reader(ACTIONS)  # unpinned: its newest
    v3 = site.version(REQUESTS, 3)
    assert site.by_fingerprint(v3.fingerprint) is v3
    assert site.by_registry_id(V3_REGISTRY_ID) is v3


def test_a_pinned_reader_reads_a_newer_writer_and_refuses_its_new_symbols(tmp_path: Path) -> None:
    site = SchemaStore.load(write_site_catalog(tmp_path / "site", pin_reader=2))
    record = request(1).to_avro()
    old_symbol = encode_single_object(record, REQUESTS, site, version=3)
    decoded = decode(old_symbol, REQUESTS, site)
    assert decoded.writer.version == 3 and decoded.record == record
    new_symbol = encode_confluent({**record, "category": NEW_CATEGORY}, REQUESTS, site, 3)
    with pytest.raises(DecodeError) as info:
        decode(new_symbol, REQUESTS, site)
    assert info.value.reason is ReasonCode.UNKNOWN_ENUM_SYMBOL
    assert NEW_CATEGORY in info.value.message
    # Encoding without a version writes what the pipeline reads, not the newest.
    assert encode_single_object(record, REQUESTS, site)[2:10] == site.reader(REQUESTS).fingerprint


@pytest.mark.parametrize(
    ("readers", "message"),
    [
        ({REQUESTS: 7}, r"removal\.requests-value' pinned to v7"),
        ({"removal.nope-value": 1}, "unknown subject 'removal.nope-value'"),
        ({REQUESTS: "2"}, "'readers' must map subjects to version numbers"),
        ({REQUESTS: True}, "'readers' must map subjects to version numbers"),
        ([REQUESTS], "'readers' must map subjects to version numbers"),
    ],
)
def test_bad_reader_pins_are_refused(tmp_path: Path, readers: Any, message: str) -> None:
    directory = write_site_catalog(tmp_path / "site", pin_reader=None)
    catalog = json.loads((directory / "catalog.json").read_text(encoding="utf-8"))
    catalog["readers"] = readers
    (directory / "catalog.json").write_text(json.dumps(catalog), encoding="utf-8")
    with pytest.raises(SchemaCatalogError, match=message) as info:
        SchemaStore.load(directory)
    assert "catalog.json" in str(info.value)

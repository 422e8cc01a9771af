"""avro_files: raw-message and event-record container files, old versions, damaged files."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.avro_codec import decode, encode_confluent, encode_single_object
from connectors.avro_files import (
    AvroFileError,
    RawMessage,
    read_raw_messages,
    read_records,
    scan_container,
    write_raw_messages,
    write_records,
)
from connectors.schema_store import SchemaStore

REQUESTS = "removal.requests-value"
ACTIONS = "removal.actions-value"
STORE = SchemaStore.load()

REQUEST_V1: dict[str, Any] = {
    "event_id": "evt-1",
    "request_id": "RKN-2024-001",
    "authority": "Roskomnadzor",
    "jurisdiction": "RU",
    "platform": "twitter",
    "content_id": "123",
    "content_type": "POST",
    "category": "EXTREMISM",
    "legal_basis": "149-FZ art. 15.1",
    "requested_action": "REMOVE",
    "issued_at": datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
}
V2_DEFAULTS = {"event_type": "ISSUED", "authority_kind": "OTHER", "withdrawn_at": None}


def action(i: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{i}",
        "action_id": f"A-{i}",
        "request_id": None,
        "platform": "twitter",
        "content_id": str(i),
        "action": "REMOVED",
        "jurisdiction": None,
        "acted_at": datetime(2024, 3, 2, tzinfo=UTC) + timedelta(seconds=i),
    }


def sample_messages() -> list[RawMessage]:
    at = datetime(2024, 3, 2, 9, 0, 0, 250000, tzinfo=UTC)
    return [
        RawMessage(
            "removal.requests",
            b"twitter/123",
            encode_single_object(REQUEST_V1, REQUESTS, STORE, 1),
            at,
        ),
        RawMessage("removal.actions", None, encode_confluent(action(1), ACTIONS, STORE), None),
        RawMessage("removal.requests", b"", b"\xc3\x01 not really avro", at),
    ]


def test_raw_messages_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "messages.avro"
    messages = sample_messages()
    assert write_raw_messages(path, messages, STORE) == 3
    assert list(read_raw_messages(path, STORE)) == list(enumerate(messages))


def test_raw_message_values_decode_like_kafka_payloads(tmp_path: Path) -> None:
    path = tmp_path / "messages.avro"
    write_raw_messages(path, sample_messages()[:2], STORE)
    (_, request), (_, act) = read_raw_messages(path, STORE)
    assert decode(request.value, REQUESTS, STORE).record == {**REQUEST_V1, **V2_DEFAULTS}
    assert decode(act.value, ACTIONS, STORE).record == action(1)


def test_files_use_deflate(tmp_path: Path) -> None:
    path = tmp_path / "messages.avro"
    write_raw_messages(path, sample_messages(), STORE)
    with path.open("rb") as source:
        assert fastavro.reader(source).codec == "deflate"


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RawMessage("removal.requests", None, b"", datetime(2024, 1, 1))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.avro"
    assert write_raw_messages(path, [], STORE) == 0
    assert list(read_raw_messages(path, STORE)) == []


RAW_MESSAGES = st.builds(
    RawMessage,
    topic=st.sampled_from(["removal.requests", "removal.actions"]),
    key=st.none() | st.binary(max_size=20),
    value=st.binary(max_size=60),
    timestamp=st.none()
    | st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)


@settings(max_examples=25, deadline=None)
@given(messages=st.lists(RAW_MESSAGES, max_size=20))
def test_raw_messages_round_trip_generated(messages: list[RawMessage]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "messages.avro"
        assert write_raw_messages(path, messages, STORE) == len(messages)
        assert list(read_raw_messages(path, STORE)) == list(enumerate(messages))


def test_same_sync_marker_gives_identical_files(tmp_path: Path) -> None:
    marker = bytes(range(16))
    messages = sample_messages()
    first, second = tmp_path / "first.avro", tmp_path / "second.avro"
    assert write_raw_messages(first, messages, STORE, sync_marker=marker) == 3
    assert write_raw_messages(second, messages, STORE, sync_marker=marker) == 3
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().endswith(marker)  # the marker closes every block
    assert list(read_raw_messages(first, STORE)) == list(enumerate(messages))


def test_sync_marker_across_blocks(tmp_path: Path) -> None:
    marker = b"0123456789abcdef"
    records = [action(i) for i in range(3000)]
    first, second = tmp_path / "first.avro", tmp_path / "second.avro"
    write_records(first, ACTIONS, records, STORE, sync_marker=marker)
    write_records(second, ACTIONS, records, STORE, sync_marker=marker)
    data = first.read_bytes()
    assert data == second.read_bytes()
    with first.open("rb") as source:
        blocks = sum(1 for _ in fastavro.block_reader(source))
    assert blocks > 1
    assert data.count(marker) == blocks + 1  # after the header and after each block
    assert list(read_records(first, ACTIONS, STORE)) == list(enumerate(records))


def test_without_sync_marker_files_differ(tmp_path: Path) -> None:
    first, second = tmp_path / "first.avro", tmp_path / "second.avro"
    write_raw_messages(first, sample_messages(), STORE)
    write_raw_messages(second, sample_messages(), STORE)
    assert first.read_bytes() != second.read_bytes()  # fastavro draws a random marker


@pytest.mark.parametrize("marker", [b"", b"x" * 15, b"x" * 17])
def test_sync_marker_must_be_16_bytes(tmp_path: Path, marker: bytes) -> None:
    path = tmp_path / "messages.avro"
    with pytest.raises(ValueError, match="sync_marker must be 16 bytes"):
        write_raw_messages(path, sample_messages(), STORE, sync_marker=marker)
    assert not path.exists()


def test_v1_record_file_reads_with_v2_defaults(tmp_path: Path) -> None:
    path = tmp_path / "requests-v1.avro"
    records = [REQUEST_V1, {**REQUEST_V1, "event_id": "evt-9", "category": "FRAUD"}]
    assert write_records(path, REQUESTS, records, STORE, version=1) == 2
    assert list(read_records(path, REQUESTS, STORE)) == [
        (i, {**r, **V2_DEFAULTS}) for i, r in enumerate(records)
    ]


def test_positions_run_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "actions.avro"
    records = [action(i) for i in range(3000)]
    assert write_records(path, ACTIONS, records, STORE) == 3000
    with path.open("rb") as source:
        assert sum(1 for _ in fastavro.block_reader(source)) > 1  # several blocks
    assert list(read_records(path, ACTIONS, STORE)) == list(enumerate(records))


def test_bad_record_is_refused_and_no_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "actions.avro"
    records = [action(0), {**action(1), "action": "VAPORISED"}]
    with pytest.raises(AvroFileError, match="record 1 does not match"):
        write_records(path, ACTIONS, records, STORE)
    assert not path.exists()


def test_not_avro_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not avro\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes\.txt: not an Avro container file"):
        list(read_raw_messages(path, STORE))


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AvroFileError, match=r"absent\.avro: cannot open"):
        list(read_records(tmp_path / "absent.avro", ACTIONS, STORE))


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "actions.avro"
    records = [action(i) for i in range(3000)]
    write_records(path, ACTIONS, records, STORE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    seen: list[tuple[int, dict[str, Any]]] = []
    with pytest.raises(AvroFileError, match=r"actions\.avro: corrupt Avro container file"):
        for item in read_records(path, ACTIONS, STORE):
            seen.append(item)
    assert seen == list(enumerate(records))[: len(seen)]  # what came out before was right


@pytest.mark.parametrize("where", ["sync marker", "block data"])
def test_corrupt_file(tmp_path: Path, where: str) -> None:
    path = tmp_path / "actions.avro"
    write_records(path, ACTIONS, [action(i) for i in range(50)], STORE)
    data = bytearray(path.read_bytes())
    if where == "sync marker":
        data[-1] ^= 0xFF
    else:  # zero out the middle of the only block's deflate stream
        middle = len(data) - 16 - 200
        data[middle : middle + 40] = bytes(40)
    path.write_bytes(bytes(data))
    with pytest.raises(AvroFileError, match=r"actions\.avro: corrupt"):
        list(read_records(path, ACTIONS, STORE))


def test_file_of_another_subject_does_not_resolve(tmp_path: Path) -> None:
    path = tmp_path / "actions.avro"
    write_records(path, ACTIONS, [action(0)], STORE)
    with pytest.raises(AvroFileError, match=r"does not resolve to removal\.requests-value v2"):
        list(read_records(path, REQUESTS, STORE))


def test_scan_counts_records_and_finds_a_truncation_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "actions.avro"
    records = [action(i) for i in range(3000)]
    write_records(path, ACTIONS, records, STORE)
    scan = scan_container(path)
    assert (
        scan.records == 3000 and scan.writer_schema["name"] == "removal_audit.events.PlatformAction"
    )
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2):  # the last sync marker short; mid-block
        path.write_bytes(data[:cut])
        with pytest.raises(
            AvroFileError, match=r"actions\.avro: truncated or corrupt .* after record \d+"
        ):
            scan_container(path)

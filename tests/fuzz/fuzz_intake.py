"""atheris (libFuzzer, coverage-guided) harness for intake: any bytes on either event topic
must get a sound `take_in` verdict (`tests.fuzzing.check_intake`), and a valid payload with
bytes appended must be quarantined for exactly the expected reason, never accepted.

Run from the repository root; the arguments are libFuzzer's:
    .venv/bin/python tests/fuzz/fuzz_intake.py -runs=100000
    .venv/bin/python tests/fuzz/fuzz_intake.py -max_total_time=600 .fuzz-corpus/
An input's first bytes pick a topic and a mode: raw bytes, a built-in valid payload
damaged by one to three `tests.fuzzing` mutations, or a valid payload with bytes appended;
the rest of the input feeds that mode, so the fuzzer gets past the framing header and the
schema fingerprint from an empty corpus. A crash or broken invariant stops the run with a
traceback, saves the input as crash-<sha1> and exits non-zero.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import atheris

# Run as a script, so the repository root (for `tests.fuzzing`) is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["connectors", "pipelines"]):
    from connectors.avro_codec import DEFAULT_MAX_BYTES
    from connectors.avro_files import RawMessage
    from connectors.origin import SourceRef
    from connectors.schema_store import SchemaStore, SchemaVersion
    from pipelines.intake import (
        ACTIONS_TOPIC,
        REQUESTS_TOPIC,
        SUBJECTS,
        IntakeRules,
        Quarantined,
        take_in,
    )

from tests.fuzzing import (
    FRAMINGS,
    MUTATION_OPS,
    Mutation,
    appended_reason,
    check_intake,
    mutate,
    writers_of,
)

STORE = SchemaStore.load()
RULES = IntakeRules(
    now=datetime(2026, 1, 1, tzinfo=UTC),
    max_clock_skew_seconds=300,
    oldest_plausible=datetime(2000, 1, 1, tzinfo=UTC),
    max_message_bytes=DEFAULT_MAX_BYTES,
)
TOPICS = (REQUESTS_TOPIC, ACTIONS_TOPIC)
TOPIC_OF = {subject: topic for topic, subject in SUBJECTS.items()}
ORIGIN = SourceRef("atheris", 0)
RAW, MUTATED, APPENDED = range(3)

_ISSUED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SEED_RECORDS: dict[str, list[dict[str, Any]]] = {
    "removal.requests-value": [
        {
            "event_id": "evt-1",
            "request_id": "RKN-2024-001",
            "event_type": "ISSUED",
            "authority": "Roskomnadzor",
            "authority_kind": "REGULATOR",
            "jurisdiction": "RU",
            "platform": "twitter",
            "content_id": "1361",
            "content_type": "POST",
            "category": "SUICIDE_PROMOTION",
            "legal_basis": "149-FZ art. 15.1",
            "requested_action": "REMOVE",
            "issued_at": _ISSUED,
            "withdrawn_at": None,
        },
        {
            "event_id": "evt-2",
            "request_id": "BfJ-77",
            "event_type": "WITHDRAWN",
            "authority": "Bundesamt für Justiz",
            "authority_kind": "GOVERNMENT",
            "jurisdiction": "DE",
            "platform": "youtube",
            "content_id": "v/ä9",
            "content_type": "VIDEO",
            "category": "HATE_SPEECH",
            "legal_basis": "NetzDG §3",
            "requested_action": "RESTRICT",
            "issued_at": _ISSUED,
            "withdrawn_at": datetime(2024, 3, 2, tzinfo=UTC),
        },
    ],
    "removal.actions-value": [
        {
            "event_id": "evt-3",
            "action_id": "A-77",
            "request_id": "RKN-2024-001",
            "platform": "twitter",
            "content_id": "1361",
            "action": "RESTRICTED",
            "jurisdiction": "RU",
            "acted_at": datetime(2024, 3, 2, 8, 30, 15, 123000, tzinfo=UTC),
        },
        {
            "event_id": "evt-4",
            "action_id": "A-78",
            "request_id": None,
            "platform": "twitter",
            "content_id": "1362",
            "action": "REMOVED",
            "jurisdiction": None,
            "acted_at": _ISSUED,
        },
    ],
}


def _seeds() -> list[tuple[SchemaVersion, bytes]]:
    """Every seed record in every writer version and framing of its subject."""
    seeds = []
    for sv, framing in writers_of(STORE, tuple(SUBJECTS.values())):
        fields = [f["name"] for f in sv.schema["fields"]]
        for record in SEED_RECORDS[sv.subject]:
            written = {name: record[name] for name in fields}
            seeds.append((sv, FRAMINGS[framing](written, sv.subject, STORE, sv.version)))
    return seeds


SEEDS = _seeds()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(RAW, APPENDED)
    writer, value = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
    # Mostly the seed's own topic: the other one stops every payload at the subject check.
    topic = TOPIC_OF[writer.subject]
    if fdp.ConsumeIntInRange(0, 7) == 0:
        topic = next(t for t in TOPICS if t != topic)
    if mode == RAW:
        value = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == APPENDED:
        value += fdp.ConsumeBytes(fdp.remaining_bytes()) or b"\x00"
    else:
        for _ in range(fdp.ConsumeIntInRange(1, 3)):
            op = MUTATION_OPS[fdp.ConsumeIntInRange(0, len(MUTATION_OPS) - 1)]
            _, partner = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
            at, aux = fdp.ConsumeUInt(2), fdp.ConsumeUInt(2)
            edit = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 24)) or b"\x00"
            value = mutate(Mutation(op, at, aux, edit), value, partner)
    message = RawMessage(topic, None, value)
    result = take_in(message, ORIGIN, STORE, RULES)
    check_intake(message, ORIGIN, result, STORE, RULES)
    if mode == APPENDED:
        assert isinstance(result, Quarantined), result
        assert result.reason is appended_reason(writer, topic, len(value), RULES), result


def main() -> None:
    for writer, payload in SEEDS:  # the seeds themselves must pass, or every find is noise
        message = RawMessage(TOPIC_OF[writer.subject], None, payload)
        result = take_in(message, ORIGIN, STORE, RULES)
        assert not isinstance(result, Quarantined), result
        check_intake(message, ORIGIN, result, STORE, RULES)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

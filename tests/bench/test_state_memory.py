"""bench.state_memory: the streaming job's in-process state, fed a generated workload the
way its dedupe and lifecycle stages are fed."""

from __future__ import annotations

from pathlib import Path

from bench.state_memory import measure
from bench.workload import generate


def test_every_delivery_is_offered_once_and_every_event_kept_once(tmp_path: Path) -> None:
    workload = generate(2_000, tmp_path / "w", 6)
    result = measure(workload)
    # Malformed payloads are refused at intake; every other message reaches the dedupe,
    # which keeps one copy per event and drops the duplicate deliveries.
    assert result["deliveries"] == workload.messages - workload.malformed
    assert result["events_kept"] == workload.requests + workload.actions
    assert result["deliveries"] - result["events_kept"] == workload.duplicates
    # Both stages hold their copy of every event: at least its fields' strings.
    assert result["bytes_per_event"]["dedupe"] > 200
    assert result["bytes_per_event"]["lifecycle"] > 200

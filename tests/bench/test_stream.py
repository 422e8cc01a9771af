"""The streaming step's result: what its landed tables account for."""

from __future__ import annotations

from bench.proc import Measured
from bench.stream import ThroughputResult


def _result(messages: int, **account: int) -> ThroughputResult:
    counts = {"request_events": 0, "action_events": 0, "duplicates": 0, "quarantined": 0}
    return ThroughputResult(
        measured=Measured(returncode=0, seconds=10.0, peak_rss=1, output="", samples=[]),
        messages=messages,
        first_commit_s=2.0,
        last_commit_s=7.0,
        account={**counts, "requests": 4, **account},
    )


def test_every_message_is_an_event_a_duplicate_or_quarantined() -> None:
    whole = _result(100, request_events=60, action_events=30, duplicates=7, quarantined=3)
    assert whole.unaccounted == 0
    # The requests the events make are not messages.
    assert _result(100, request_events=60, action_events=30, requests=90).unaccounted == 10
    assert whole.rate == 10.0 and whole.steady_rate == 20.0

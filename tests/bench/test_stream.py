"""The streaming step's result: what its landed tables account for."""

from __future__ import annotations

from bench.proc import Measured
from bench.stream import LedgerEntry, ThroughputResult, ledger_gaps


def _result(messages: int, **account: int) -> ThroughputResult:
    counts = {"request_events": 0, "action_events": 0, "duplicates": 0, "quarantined": 0}
    return ThroughputResult(
        measured=Measured(returncode=0, seconds=10.0, peak_rss=1, output="", samples=[]),
        messages=messages,
        first_commit_s=2.0,
        last_commit_s=7.0,
        account={**counts, "requests": 4, **account},
        gaps={},
    )


def test_every_message_is_an_event_a_duplicate_or_quarantined() -> None:
    whole = _result(100, request_events=60, action_events=30, duplicates=7, quarantined=3)
    assert whole.unaccounted == 0
    # The requests the events make are not messages.
    assert _result(100, request_events=60, action_events=30, requests=90).unaccounted == 10
    assert whole.rate == 10.0 and whole.steady_rate == 20.0


def test_ledger_gaps_name_every_offset_no_landed_batch_covers() -> None:
    def batch(topic: str, partition: int, first: int, last: int) -> LedgerEntry:
        return LedgerEntry("b", 0.0, topic, partition, first, last)

    ledger = [batch("t", 0, 5, 9), batch("t", 0, 0, 3), batch("t", 0, 8, 12), batch("t", 1, 0, 4)]
    ends = {("t", 0): 20, ("t", 1): 5, ("u", 0): 3}
    # A hole inside, a tail never landed, and a partition nothing landed from; the partition
    # landed in full is not named.
    assert ledger_gaps(ledger, ends) == {("t", 0): [(4, 4), (13, 19)], ("u", 0): [(0, 2)]}
    assert ledger_gaps(ledger[1:2], {("t", 0): 4}) == {}

"""bench.report merges runs: a later run's measured step replaces an earlier one's (measured
or not run), rows name their run, a ratio to another run's floor says so, and a step keeps
the ratio to its own run's floor."""

from __future__ import annotations

from typing import Any

from bench.report import merge, rows


def _run(command: str, sizes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"started": "t0", "finished": "t1", "command": command, "sizes": sizes}


def _size(events: int, **steps: dict[str, Any]) -> dict[str, Any]:
    return {"events": events, "messages": events, **steps}


def test_runs_merge_by_size_and_step_and_rows_name_their_run() -> None:
    first = _run(
        "make bench",
        [
            _size(
                100,
                floor={"seconds": 1.0, "rate": 100.0},
                streaming={"seconds": 10.0, "rate": 10.0},
            ),
            _size(
                1000, floor={"seconds": 10.0, "rate": 100.0}, streaming={"skipped": "above --limit"}
            ),
        ],
    )
    second = _run(
        "bench.run --only streaming --sizes 100,1000",
        [
            _size(100, streaming={"seconds": 5.0, "rate": 20.0}),
            _size(1000, streaming={"seconds": 40.0, "rate": 25.0, "cpu_seconds": {"python": 40.0}}),
        ],
    )
    merged = merge([first, second])
    assert [s["events"] for s in merged["sizes"]] == [100, 1000]
    by_path = {(r[0], r[1]): r for r in rows(merged)}
    streaming_100 = by_path[("100", "pipeline, streaming over Kafka")]
    assert streaming_100[3] == "20" and streaming_100[4] == "0.200 (run 1's floor)"
    assert streaming_100[-1] == "2"
    streaming_1000 = by_path[("1,000", "pipeline, streaming over Kafka")]
    assert streaming_1000[3] == "25" and streaming_1000[-2].startswith("1.00 (python 1.00)")
    assert by_path[("1,000", "floor: Kafka -> fastavro -> DuckDB (Arrow)")][-1] == "1"
    # A later run that did not measure a step leaves the earlier measurement.
    third = _run("bench.run --only floor", [_size(100, streaming={"skipped": "limit"})])
    again = {(r[0], r[1]): r for r in rows(merge([first, second, third]))}
    assert again[("100", "pipeline, streaming over Kafka")][3] == "20"


def test_a_step_keeps_its_ratio_to_its_own_runs_floor() -> None:
    first = _run(
        "make bench",
        [_size(100, floor={"seconds": 1.0, "rate": 100.0}, batch={"seconds": 2.0, "rate": 50.0})],
    )
    second = _run("bench.run --only floor", [_size(100, floor={"seconds": 0.5, "rate": 200.0})])
    by_path = {r[1]: r for r in rows(merge([first, second]))}
    assert by_path["floor: Kafka -> fastavro -> DuckDB (Arrow)"][3] == "200"
    assert by_path["pipeline, batch over files"][4] == "0.500"


def test_a_step_that_loses_messages_says_so_in_its_row() -> None:
    merged = merge(
        [
            _run(
                "bench.run",
                [
                    _size(
                        100,
                        floor={"seconds": 1.0, "rate": 100.0},
                        streaming={"seconds": 10.0, "rate": 10.0, "unaccounted": 3},
                    ),
                    _size(
                        1000,
                        floor={"seconds": 10.0, "rate": 100.0},
                        streaming={"seconds": 50.0, "rate": 20.0, "unaccounted": 0},
                    ),
                ],
            )
        ]
    )
    streaming = [row for row in rows(merged) if row[1].startswith("pipeline, streaming")]
    assert streaming[0][3] == "10 (3 messages unaccounted for)"
    assert streaming[1][3] == "20"

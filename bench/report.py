"""bench/out/results.json -> the table in bench/RESULTS.md (between its markers) and the
chart bench/results.png.

    python -m bench.report [--results bench/out/results.json] [--results more.json ...]

Several results files (runs that measured other steps or sizes) merge into one table: a
step measured by a later run replaces the earlier runs' (measured, not run or failed), and
each row names its run. Ratios are to the floor of the same run when it measured one at
that size, else to the table's floor, marked with that floor's run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
CHART = ROOT / "bench" / "results.png"
START, END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
PROFILES_START, PROFILES_END = "<!-- bench:profiles:start -->", "<!-- bench:profiles:end -->"
OUT = ROOT / "bench" / "out"
MIB = 2**20

# Targets from the issue: events/s floors, latency ceiling, memory per open request.
TARGETS = {"streaming_rate": 50_000, "streaming_ratio": 0.5, "batch_rate": 100_000}
LATENCY_P99_S = 2.0
BYTES_PER_OPEN = 1024


def _rate(step: dict[str, Any] | None) -> float | None:
    if not step or "rate" not in step:
        return None
    return float(step["rate"])


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(value: float | None, floor: float | None) -> str:
    if value is None or not floor:
        return "-"
    return f"{value / floor:.3f}"


def _mib(step: dict[str, Any] | None) -> str:
    if not step or not step.get("peak_rss"):
        return "-"
    text = f"{step['peak_rss'] / MIB:,.0f}"
    by_process = step.get("peak_rss_by_process") or {}
    if len(by_process) > 1:  # each process's own peak
        text += " (" + ", ".join(f"{k} {v / MIB:,.0f}" for k, v in by_process.items()) + ")"
    return text


def _measured(step: Any) -> bool:
    return isinstance(step, dict) and not ("error" in step or "skipped" in step)


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several runs (see the module docstring); every step keeps the
    number of its run (1-based) under "run"."""
    merged = {**runs[0], "runs": runs, "sizes": []}
    by_events: dict[int, dict[str, Any]] = {}
    for number, run in enumerate(runs, 1):
        for size in run["sizes"]:
            into = by_events.setdefault(size["events"], {"events": size["events"]})
            into.setdefault("messages", size["messages"])
            floor = size.get("floor")
            for key, step in size.items():
                if not isinstance(step, dict):
                    continue
                if _measured(step) or key not in into:
                    step = {**step, "run": number}
                    if _measured(floor) and key != "floor":
                        step["floor_seconds"] = floor["seconds"]  # this run's own floor
                    if _measured(step) or not _measured(into.get(key)):
                        into[key] = step
            if "latency" in run and _measured(run["latency"]):
                merged["latency"] = {**run["latency"], "run": number}
    merged["sizes"] = [by_events[events] for events in sorted(by_events)]
    return merged


def _ratio(step: dict[str, Any] | None, rate: float | None, floor: Any, messages: int) -> str:
    if step is not None and "floor_seconds" in step:
        return _fmt_ratio(rate, messages / step["floor_seconds"])
    text = _fmt_ratio(rate, _rate(floor))
    if text != "-" and step is not None and floor.get("run") != step.get("run"):
        text += f" (run {floor['run']}'s floor)"
    return text


def _cores(step: dict[str, Any] | None) -> str:
    """Cores the job kept busy: its process tree's CPU seconds over its wall time."""
    if not _measured(step) or not step.get("cpu_seconds"):  # type: ignore[union-attr]
        return "-"
    assert step is not None
    cpu = step["cpu_seconds"]
    wall = step.get("process_s", step["seconds"])
    parts = ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in cpu.items())
    return f"{sum(cpu.values()) / wall:.2f} ({parts})"


def _unaccounted(step: dict[str, Any] | None) -> str:
    """A step whose landed tables do not account for every message says so."""
    missing = (step or {}).get("unaccounted")
    return f" ({missing:,} messages unaccounted for)" if missing else ""


def rows(results: dict[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for size in results["sizes"]:
        floor = size.get("floor")
        floor_rate = _rate(floor)
        sql = size.get("sql")
        sql_rate = None
        if sql and "seconds" in sql and floor_rate:
            # The user of plain SQL loads the events (the floor) and then runs the SQL.
            load = sql.get("floor_seconds", floor["seconds"])  # the SQL's own run's floor
            sql_rate = size["messages"] / (load + sql["seconds"])
        streaming = size.get("streaming")
        per_open = "-"
        if streaming and "error" not in streaming and streaming.get("bytes_per_open_request"):
            per_open = f"{streaming['bytes_per_open_request']:,.0f}"
        for name, step, rate in (
            ("floor: Kafka -> fastavro -> DuckDB (Arrow)", floor, floor_rate),
            ("pipeline, batch over files", size.get("batch"), _rate(size.get("batch"))),
            ("pipeline, streaming over Kafka", streaming, _rate(streaming)),
            ("plain DuckDB SQL (floor load + SQL)", sql, sql_rate),
        ):
            error = (step.get("error") or step.get("skipped")) if step else "not run"
            seconds = "-" if error else f"{step['seconds']:,.1f}"
            if name.startswith("plain") and not error:
                load = sql.get("floor_seconds", floor["seconds"])
                seconds = f"{load + sql['seconds']:,.1f}"
            out.append(
                [
                    f"{size['messages']:,}",
                    name,
                    seconds,
                    _fmt_rate(rate) + _unaccounted(step)
                    if not error
                    else (
                        f"not run ({error})"
                        if step and "skipped" in step
                        else f"failed: {error}"[:80]
                    ),
                    _ratio(step, rate, floor, size["messages"]),
                    _mib(step),
                    per_open if name.startswith("pipeline, streaming") else "-",
                    _cores(step),
                    str((step or {}).get("run", "-")),
                ]
            )
    return out


def table(results: dict[str, Any]) -> str:
    head = [
        "messages",
        "path",
        "seconds",
        "events/s",
        "ratio to floor",
        "peak RSS (MiB)",
        "bytes / open request (peak - idle RSS)",
        "cores busy (by process)",
        "run",
    ]
    m = results["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    latency = results.get("latency")
    if latency and "error" not in latency:
        lines += [
            "",
            f"Latency, streaming job fed {latency['rate']:,.0f} events/s for "
            f"{latency['sent'] / latency['rate']:,.0f} s ({latency['sent']:,} messages, "
            f"{latency['landed']:,} landed), snapshot every {latency['snapshot_every']:g} s"
            f" (run {latency.get('run', 1)}):",
            "",
            "| from Kafka append to | p50 (s) | p99 (s) |",
            "|---|---|---|",
            f"| committed in the job's database | {latency['commit_p50']:.2f} | "
            f"{latency['commit_p99']:.2f} |",
            f"| visible in the auditors' snapshot | {latency['visible_p50']:.2f} | "
            f"{latency['visible_p99']:.2f} |",
        ]
    elif latency:
        lines += ["", f"Latency run failed: {latency['error'][:300]}"]
    lines += [""]
    for number, run in enumerate(results.get("runs", [results]), 1):
        lines.append(
            f"Run {number}, {run['started']} to {run.get('finished', '(unfinished)')}: "
            f"`{run['command']}`"
        )
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [("floor", "floor"), ("batch", "batch"), ("streaming", "streaming"), ("sql", "SQL")]
    sizes = results["sizes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(paths)
    for i, (key, label) in enumerate(paths):
        rates = []
        for size in sizes:
            step = size.get(key)
            if key == "sql" and step and "seconds" in step and _rate(size.get("floor")):
                load = step.get("floor_seconds", size["floor"]["seconds"])
                rates.append(size["messages"] / (load + step["seconds"]))
            else:
                rates.append(_rate(step) or 0.0)
        xs = [j + i * width for j in range(len(sizes))]
        left.bar(xs, rates, width, label=label)
        mems = [(size.get(key) or {}).get("peak_rss", 0) / MIB for size in sizes]
        right.bar(xs, mems, width, label=label)
    labels = [f"{s['messages'] / 1e6:.1f}M messages" for s in sizes]
    for ax in (left, right):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], labels)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("events / s (log)")
    left.axhline(TARGETS["batch_rate"], color="grey", ls="--", lw=0.8)
    left.axhline(TARGETS["streaming_rate"], color="grey", ls=":", lw=0.8)
    left.set_title("throughput (dashed: batch target, dotted: streaming target)", fontsize=9)
    right.set_ylabel("peak RSS (MiB)")
    right.set_title("peak resident memory of the process tree", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def profiles(out: Path = OUT) -> str:
    """The py-spy summary of each profiled job of the run (bench/out/profile-*.txt)."""
    from bench.profile import summarise

    parts = []
    for raw in sorted(out.glob("profile-*.txt")):
        parts += [f"{raw.stem.removeprefix('profile-')}:", "```", summarise(raw, top=12), "```", ""]
    return "\n".join(parts) or "(no profiles: run with py-spy installed)"


def _replace(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{RESULTS_MD} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def render(results: dict[str, Any], markdown: Path = RESULTS_MD, png: Path = CHART) -> None:
    text = _replace(markdown.read_text(), START, END, table(results))
    text = _replace(text, PROFILES_START, PROFILES_END, profiles())
    markdown.write_text(text)
    chart(results, png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument(
        "--results", type=Path, action="append", help="repeatable (default bench/out/results.json)"
    )
    args = parser.parse_args(argv)
    paths = args.results or [ROOT / "bench" / "out" / "results.json"]
    render(merge([json.loads(path.read_text()) for path in paths]))
    print(f"table: {RESULTS_MD}\nchart: {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

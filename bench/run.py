"""`make bench`: the same events through the floor, the pipeline (batch and streaming) and
plain DuckDB SQL, at each size; then the latency run; results to JSON, RESULTS.md's table
and the chart.

    python -m bench.run [--sizes 1000000,10000000] [--only floor,batch,sql,streaming,latency]

Each measured step runs as its own process (wall time, peak RSS of its process tree). One
Kafka broker (the project's, docker/kafka/broker.py) serves the run on 127.0.0.1; each size
gets its own topics. Work files go to a temporary directory under bench/out/ (removed after
each size); results to bench/out/results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import profile
from bench.proc import run_measured
from bench.stream import open_requests, run_latency, run_throughput
from bench.workload import Workload, ensure_workload

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STEPS = ("floor", "batch", "sql", "streaming", "latency")


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def prism_location() -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "prism" / "build.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def _json_tail(output: str) -> dict[str, Any]:
    return dict(json.loads(output.strip().splitlines()[-1]))


def _step(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"  {name} ...", flush=True)
    try:
        result = run()
    except Exception as error:  # recorded in the table, the other steps still run
        print(f"  {name} FAILED: {error}", flush=True)
        # The first line says how it ended (the report's table shows it); then the output.
        ended, _, output = str(error).partition("\n")
        return {"error": ended[:500], **({"output_tail": output[-500:]} if output else {})}
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


def _keep_failed(out: dict[str, Any], work: Path, events: int) -> None:
    """A failed step's job logs outlive its work directory (bench/out/failed-<events>-*.log),
    and so does a failed streaming job's database (what it landed, and its ledger)."""
    if any(isinstance(step, dict) and "error" in step for step in out.values()):
        for log in work.glob("*.log"):
            shutil.copyfile(log, OUT / f"failed-{events}-{log.name}")
    database = work / "stream.duckdb"
    if "error" in out.get("streaming", {}) and database.exists():
        shutil.copyfile(database, OUT / f"failed-{events}-{database.name}")


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str, prism: str) -> None:
        self.args, self.bootstrap, self.prism = args, bootstrap, prism
        self.python = sys.executable
        self.samplers: list[profile.Sampling] = []

    def size(self, events: int) -> dict[str, Any]:
        print(f"{events:,} events", flush=True)
        started = time.perf_counter()
        workload = ensure_workload(events, self.args.seed)
        out: dict[str, Any] = {
            "events": events,
            "messages": workload.messages,
            "workload": {
                "requests": workload.requests,
                "actions": workload.actions,
                "duplicates": workload.duplicates,
                "malformed": workload.malformed,
                "event_time_span_s": (
                    workload.last_event_time - workload.first_event_time
                ).total_seconds(),
                "ready_s": time.perf_counter() - started,
            },
        }
        work = Path(tempfile.mkdtemp(prefix=f"size-{events}-", dir=OUT))
        try:
            prefix = f"bench-{events}-{uuid.uuid4().hex[:6]}."
            if self.runs("floor", events) or self.runs("streaming", events):
                out["publish"] = _step("publish", lambda: self.publish(workload, prefix))
            if self.runs("floor", events):
                out["floor"] = _step("floor", lambda: self.floor(work, prefix, workload))
            if self.runs("sql", events) and "error" not in out.get("floor", {"error": 1}):
                out["sql"] = _step("sql", lambda: self.sql(work, workload))
            if self.runs("batch", events):
                out["batch"] = _step("batch", lambda: self.batch(work, workload))
            if self.runs("streaming", events):
                out["streaming"] = _step(
                    "streaming", lambda: self.streaming(work, prefix, workload)
                )
            for step in ("floor", "sql", "batch", "streaming"):
                if step in self.args.only and step not in out:
                    out[step] = {"skipped": f"above --limit {step}={self.args.limits[step]:,}"}
        finally:
            self.wait_for_profiles()
            _keep_failed(out, work, events)
            shutil.rmtree(work, ignore_errors=True)
        return out

    def runs(self, step: str, events: int) -> bool:
        return step in self.args.only and events <= self.args.limits.get(step, events)

    def profiler(self, name: str, gil: bool = False) -> Callable[[int], object] | None:
        """py-spy on the measured job (with --profile): bench/out/profile-<name>.txt;
        `gil`: only the thread holding the GIL (see bench.profile.attach)."""
        if not self.args.profile:
            return None

        def start(pid: int) -> None:
            sampler = profile.attach(pid, OUT / f"profile-{name}.txt", gil=gil)
            if sampler is not None:
                self.samplers.append(sampler)

        return start

    def wait_for_profiles(self) -> None:
        """py-spy writes its file once the job is gone."""
        while self.samplers:
            self.samplers.pop().wait(timeout=120)

    def publish(self, workload: Workload, prefix: str) -> dict[str, Any]:
        from bench.workload import publish_workload

        started = time.perf_counter()
        result = publish_workload(workload, self.bootstrap, prefix)
        seconds = time.perf_counter() - started
        return {"messages": result.messages, "seconds": seconds, "rate": result.messages / seconds}

    def floor(self, work: Path, prefix: str, workload: Workload) -> dict[str, Any]:
        argv = [self.python, "-m", "bench.components", "floor", "--db", str(work / "floor.duckdb")]
        argv += ["--bootstrap", self.bootstrap, "--prefix", prefix]
        measured = run_measured(argv, log=work / "floor.log", timeout=self.args.budget)
        if measured.returncode:
            raise RuntimeError(measured.failure("the floor"))
        result = _json_tail(measured.output)
        return {
            **result,
            "rate": workload.messages / result["seconds"],
            "process_s": measured.seconds,
            "peak_rss": measured.peak_rss,
            "cpu_seconds": measured.cpu_seconds,
            "peak_rss_by_process": measured.peak_rss_by_name,
        }

    def sql(self, work: Path, workload: Workload) -> dict[str, Any]:
        argv = [self.python, "-m", "bench.components", "sql", "--db", str(work / "floor.duckdb")]
        measured = run_measured(argv, log=work / "sql.log", timeout=self.args.budget)
        if measured.returncode:
            raise RuntimeError(measured.failure("the SQL alternative"))
        result = _json_tail(measured.output)
        return {**result, "process_s": measured.seconds, "peak_rss": measured.peak_rss}

    def batch(self, work: Path, workload: Workload) -> dict[str, Any]:
        database = work / "batch.duckdb"
        argv = [self.python, "-m", "pipelines.cli", "run", str(workload.directory)]
        argv += ["--db", str(database)]
        measured = run_measured(
            argv,
            log=work / "batch.log",
            timeout=self.args.budget,
            on_start=self.profiler(f"batch-{workload.events}"),
        )
        if measured.returncode:
            raise RuntimeError(measured.failure("the batch job"))
        return {
            "seconds": measured.seconds,
            "rate": workload.messages / measured.seconds,
            "peak_rss": measured.peak_rss,
            "cpu_seconds": measured.cpu_seconds,
            "peak_rss_by_process": measured.peak_rss_by_name,
            "account": _account_line(measured.output),
        }

    def streaming(self, work: Path, prefix: str, workload: Workload) -> dict[str, Any]:
        result = run_throughput(
            self.python,
            work,
            self.bootstrap,
            prefix,
            self.prism,
            workload.messages,
            timeout=self.args.budget,
            # One SDK worker whose threads share one GIL, busy all the time: what holds
            # the GIL is where its time goes (threads waiting on it or on gRPC are not).
            on_start=self.profiler(f"streaming-{workload.events}", gil=True),
        )
        unresolved = open_requests(work / "stream.duckdb")
        # The job's footprint before it holds any request: the peak before the first landing.
        idle = max(
            (rss for t, rss in result.measured.samples if t < result.first_commit_s), default=0
        )
        kept = None
        if result.unaccounted:
            # The database and the log outlive the work directory: what is missing, and why.
            kept = OUT / f"unaccounted-{workload.events}-stream.duckdb"
            shutil.copyfile(work / "stream.duckdb", kept)
            shutil.copyfile(work / "stream.log", kept.with_suffix(".log"))
            print(
                f"  streaming: {result.unaccounted:,} messages UNACCOUNTED FOR: {result.account};"
                f" offsets no landed batch covers: {result.gaps or 'none'}; database kept: {kept}",
                flush=True,
            )
        return {
            "unaccounted": result.unaccounted,
            "ledger_gaps": {f"{t}/{p}": runs for (t, p), runs in result.gaps.items()},
            **({"kept_database": str(kept)} if kept else {}),
            "idle_rss": idle,
            "bytes_per_open_request": (result.measured.peak_rss - idle) / unresolved
            if unresolved
            else None,
            "seconds": result.measured.seconds,
            "rate": result.rate,
            "steady_rate": result.steady_rate,
            "first_commit_s": result.first_commit_s,
            "peak_rss": result.measured.peak_rss,
            "cpu_seconds": result.measured.cpu_seconds,
            "peak_rss_by_process": result.measured.peak_rss_by_name,
            "open_requests": unresolved,
            "account": result.account,
        }

    def latency(self) -> dict[str, Any]:
        workload = ensure_workload(self.args.latency_events, self.args.seed)
        work = Path(tempfile.mkdtemp(prefix="latency-", dir=OUT))
        try:
            result = run_latency(
                self.python,
                work,
                self.bootstrap,
                f"bench-latency-{uuid.uuid4().hex[:6]}.",
                self.prism,
                workload,
                rate=self.args.latency_rate,
                seconds=self.args.latency_seconds,
                snapshot_every=self.args.snapshot_every,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dict(result.__dict__)


def _account_line(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith("record account")), "")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for dist in ("apache-beam", "duckdb", "fastavro", "kafka-python", "pyarrow", "numpy"):
        found[dist] = version(dist)
    broker = load_script(ROOT / "docker" / "kafka" / "broker.py", "bench_kafka_broker")
    found["kafka broker"] = broker.kafka_version()
    for tool, argv in (("java", ["java", "-version"]), ("go", ["go", "version"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            found[tool] = (done.stdout or done.stderr).splitlines()[0].strip()
        except OSError:
            found[tool] = "not found"
    return found


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        mem_kb = int(meminfo.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--only", default=",".join(STEPS))
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="STEP=EVENTS",
        help="run STEP only at sizes up to EVENTS (repeatable), e.g. streaming=100000",
    )
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds per step")
    parser.add_argument("--latency-rate", type=float, default=10_000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--latency-events", type=int, default=1_000_000)
    parser.add_argument("--snapshot-every", type=float, default=1.0)
    parser.add_argument("--results", type=Path, default=OUT / "results.json")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="do not sample the batch and streaming jobs with py-spy",
    )
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    args.limits = {}
    for limit in args.limit:
        step, _, events = limit.partition("=")
        if step not in STEPS or not events.isdigit():
            parser.error(f"--limit wants STEP=EVENTS with STEP one of {STEPS}: {limit!r}")
        args.limits[step] = int(events)
    unknown = args.only - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {sorted(unknown)}")
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "sizes": [],
    }
    broker_module = load_script(ROOT / "docker" / "kafka" / "broker.py", "bench_kafka_broker")
    prism = prism_location() if {"streaming", "latency"} & args.only else ""
    with tempfile.TemporaryDirectory(prefix="kafka-", dir=OUT) as kafka_dir:
        broker = broker_module.KafkaBroker(
            kafka_dir, port=broker_module.free_port_pair(), heap="1g"
        )
        broker.start()
        try:
            bench = Bench(args, broker.bootstrap_servers, prism)
            for events in (int(s) for s in args.sizes.split(",") if s):
                results["sizes"].append(bench.size(events))
                args.results.write_text(json.dumps(results, indent=1))
            if "latency" in args.only:
                results["latency"] = _step("latency", bench.latency)
        finally:
            broker.stop()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.results.write_text(json.dumps(results, indent=1))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

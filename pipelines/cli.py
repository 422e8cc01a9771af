"""The `removal-audit` command: generate, run, publish, sql, fingerprint, demo, quarantine,
validate, monitor, alerts."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.duckdb_limits import QueryStopped
from connectors.duckdb_quality import BatchHeld
from connectors.duckdb_reader import QueryError
from connectors.errors import KafkaSourceError
from connectors.schema_store import SchemaCatalogError, SchemaStore
from pipelines import alerts_cli, monitor_cli, quarantine_cli, validate_cli
from pipelines.preflight import PreflightError, check_database, input_files
from pipelines.scenarios.scenario_file import UnknownScenario
from pipelines.settings import Settings
from pipelines.validate_cli import ValidationUnavailable

DEFAULT_SCENARIO = "roskomnadzor-twitter-2021"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None) is not None:
        overrides["database"] = args.db
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def _input_files(paths: Sequence[Path], settings: Settings) -> list[Path]:
    """The checked input files (pipelines.preflight): a wrong one fails here, in one line."""
    return input_files(paths, SchemaStore.load(settings.schemas_dir))


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise QueryError(f"--param takes name=value, got {pair!r}")
        params[name] = value
    return params


def cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.scenarios.generator import generate

    settings = _settings(args)
    started = time.perf_counter()
    result = generate(args.scenario, settings.data_dir, seed=args.seed)
    elapsed = time.perf_counter() - started
    where = result.requests_path.parent
    print(f"generated scenario {args.scenario} (seed {args.seed}) in {elapsed:.1f} s, in {where}:")
    for path, count in (
        (result.requests_path, result.requests_messages),
        (result.actions_path, result.actions_messages),
    ):
        print(f"  {path.name:16} {count:>9,} messages")
    print(
        f"  {result.valid_requests:,} request events, {result.valid_actions:,} action events, "
        f"{result.duplicates:,} repeated deliveries, {result.malformed:,} malformed messages"
    )
    print(f"  the {len(result.checks)} published figures reproduced")
    return 0


def _prism_location(settings: Settings, given: Path | None) -> str:
    """The Prism binary: --prism-location, settings.prism_location, or the cached build of
    docker/prism/build.py (built on first use, ~5 min)."""
    import subprocess

    from pipelines.resources import resource_dir

    location = given or settings.prism_location
    if location is not None:
        if not location.is_file():
            raise FileNotFoundError(f"no Prism binary at {location}")
        return str(location)
    try:
        script = resource_dir("docker") / "prism" / "build.py"
    except FileNotFoundError:
        script = None
    if script is None or not script.is_file():
        raise FileNotFoundError(
            "no Prism runner: set REMOVAL_AUDIT_PRISM_LOCATION or --prism-location "
            "(build it with docker/prism/build.py from a source checkout)"
        )
    done = subprocess.run(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise FileNotFoundError(f"building Prism failed ({script}, exit {done.returncode})")
    return done.stdout.strip()


def cmd_run_kafka(args: argparse.Namespace) -> int:
    from pipelines.streaming import run_streaming

    overrides: dict[str, Any] = {}
    for option, field in (
        ("bootstrap_servers", "kafka_bootstrap_servers"),
        ("topic_prefix", "kafka_topic_prefix"),
        ("snapshot", "snapshot"),
        ("snapshot_every", "snapshot_every_seconds"),
    ):
        if getattr(args, option, None) is not None:
            overrides[field] = getattr(args, option)
    settings = _settings(args).model_copy(update=overrides)
    check_database(settings.database)
    prism = _prism_location(settings, args.prism_location)
    print(
        f"streaming from {settings.kafka_bootstrap_servers} into {settings.database} "
        f"(auditors: {settings.snapshot_path}, refreshed every {settings.snapshot_every_s:g} s)",
        flush=True,
    )
    run = run_streaming(settings, prism, stop_at_end=args.stop_at_end)
    print(f"run {run} stopped", flush=True)
    global _ended_job
    _ended_job = True
    return 0


# Set once a streaming job has landed everything and closed its database: the process then
# ends without the interpreter's finalization (see `entry`).
_ended_job = False


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.batch import run_batch, terminate_as_exit
    from pipelines.report import print_account

    if args.source == "kafka":
        return cmd_run_kafka(args)
    settings = _settings(args)
    inputs = _input_files(args.inputs or [settings.data_dir], settings)
    check_database(settings.database)
    started = time.perf_counter()
    with terminate_as_exit():  # a stopped run cleans up after itself
        report = run_batch(inputs, settings)
    print(f"pipeline finished in {time.perf_counter() - started:.1f} s")
    print_account(report, sys.stdout)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from connectors.kafka_publish import PublishSettings, publish

    settings = _settings(args)
    inputs = _input_files(args.inputs or [settings.data_dir], settings)
    started = time.perf_counter()
    sent = publish(
        inputs,
        PublishSettings(
            bootstrap_servers=args.bootstrap_servers or settings.kafka_bootstrap_servers,
            speedup=args.speedup,
            topic_prefix=settings.kafka_topic_prefix
            if args.topic_prefix is None
            else args.topic_prefix,
        ),
        SchemaStore.load(settings.schemas_dir),
    )
    elapsed = time.perf_counter() - started
    for topic, count in sorted(sent.items()):
        print(f"{topic}: {count:,} messages")
    print(f"published {sum(sent.values()):,} messages in {elapsed:.1f} s")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from pipelines.sql_cli import run_sql_command

    settings = _settings(args)
    return run_sql_command(
        settings.database,
        statement=args.statement,
        file=args.file,
        canned=args.canned,
        params=_parse_params(args.param),
        fmt=args.format,
        limits=settings.auditor_limits,
    )


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from connectors.duckdb_limits import enforced
    from connectors.duckdb_reader import connect_auditor
    from connectors.duckdb_sink import RUN_CLOCK_COLUMNS, table_fingerprints

    settings = _settings(args)
    con = connect_auditor(settings.database, settings.auditor_limits)
    try:
        with enforced(con, settings.auditor_limits):
            prints = table_fingerprints(con)
        if not prints:
            raise QueryError(
                f"{settings.database} holds no tables: nothing has landed in it "
                "(run `removal-audit run` first)"
            )
        for table, (rows, digest) in prints.items():
            print(f"{table:24} {rows:>9} {digest}")
        unhashed = [f"{t}.{c}" for t, cs in RUN_CLOCK_COLUMNS.items() if t in prints for c in cs]
        if unhashed:
            print(
                "not hashed (wall clock and run ids, which differ between runs): "
                + ", ".join(unhashed)
            )
    finally:
        con.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.report import run_demo

    settings = _settings(args)
    check_database(settings.database)  # before generating and running, not after
    return run_demo(settings, scenario=args.scenario, seed=args.seed, out=sys.stdout)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="removal-audit",
        description="Audit content-removal demands: which are unresolved, which missed "
        "their legal deadline, how fast platforms act.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def with_db(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--db", type=Path, help="DuckDB file (default: settings.database)")
        return sp

    g = sub.add_parser("generate", help="write a scenario's Avro files")
    g.add_argument("--scenario", default=DEFAULT_SCENARIO)
    g.add_argument("--seed", type=int, default=2021)
    g.add_argument("--out", dest="data_dir", type=Path, help="output directory")
    g.set_defaults(func=cmd_generate)

    r = with_db(
        sub.add_parser(
            "run",
            help="run the pipeline into DuckDB: over Avro files (batch) or Kafka (streaming)",
        )
    )
    r.add_argument("inputs", nargs="*", type=Path, help="files or directories (default: data dir)")
    r.add_argument("--data-dir", type=Path)
    r.add_argument(
        "--source",
        choices=["files", "kafka"],
        default="files",
        help="files: batch over Avro files; kafka: streaming from the topics until stopped",
    )
    r.add_argument("--bootstrap-servers", help="kafka: default settings.kafka_bootstrap_servers")
    r.add_argument("--topic-prefix", help="kafka: prefix of both topic names")
    r.add_argument("--snapshot", type=Path, help="kafka: the auditors' read-only copy")
    r.add_argument("--snapshot-every", type=float, help="kafka: seconds between snapshots")
    r.add_argument(
        "--stop-at-end",
        action="store_true",
        help="kafka: read up to the end offsets seen at start, land everything, then stop",
    )
    r.add_argument("--prism-location", type=Path, help="kafka: the Prism runner binary")
    r.set_defaults(func=cmd_run)

    pub = sub.add_parser("publish", help="replay Avro files into the Kafka topics")
    pub.add_argument(
        "inputs", nargs="*", type=Path, help="files or directories (default: data dir)"
    )
    pub.add_argument("--data-dir", type=Path)
    pub.add_argument("--bootstrap-servers", help="default: settings.kafka_bootstrap_servers")
    pub.add_argument(
        "--speedup",
        type=float,
        help="time-compress: arrival time / SPEEDUP onto wall time (default: as fast as possible)",
    )
    pub.add_argument("--topic-prefix", help="prefix for both topic names")
    pub.set_defaults(func=cmd_publish)

    s = with_db(sub.add_parser("sql", help="read-only SQL on the audit database"))
    s.add_argument("statement", nargs="?", help="one SQL statement (omit for a shell)")
    s.add_argument("-f", "--file", type=Path, help="run the statement in this file")
    s.add_argument("-q", "--canned", help="run a canned query of sql/queries/ by name")
    s.add_argument("-p", "--param", action="append", default=[], help="name=value")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=cmd_sql)

    f = with_db(sub.add_parser("fingerprint", help="row count and content hash of each table"))
    f.set_defaults(func=cmd_fingerprint)

    d = with_db(sub.add_parser("demo", help="generate the seed scenario, audit it, report"))
    d.add_argument("--scenario", default=DEFAULT_SCENARIO)
    d.add_argument("--seed", type=int, default=2021)
    d.add_argument("--data-dir", type=Path)
    d.set_defaults(func=cmd_demo)

    quarantine_cli.add_parser(sub)
    validate_cli.add_parser(sub)
    monitor_cli.add_parser(sub)
    alerts_cli.add_parser(sub)
    return p


def _quiet_optional_cloud_warning(record: logging.LogRecord) -> bool:
    # Beam logs at import that Google Cloud clients are missing; this tool never uses them.
    return "apitools not found" not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger().addFilter(_quiet_optional_cloud_warning)
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BatchHeld as error:
        print(f"removal-audit: {error}", file=sys.stderr)
        return 3
    except QueryStopped as error:  # an auditor's query past a limit of the session
        print(f"removal-audit: {error}", file=sys.stderr)
        return 1
    except (
        QueryError,
        FileNotFoundError,
        KafkaSourceError,
        ValidationUnavailable,
        SchemaCatalogError,
        PreflightError,
        UnknownScenario,
    ) as error:
        print(f"removal-audit: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a duckdb error in an auditor's query is not a crash
        import duckdb

        if isinstance(error, duckdb.Error):
            print(f"removal-audit: {error}", file=sys.stderr)
            return 1
        raise


# The exit status when stdout's reader went away early (`removal-audit alerts | head -1`):
# 128 + SIGPIPE, what a shell reports for a tool the signal ended, so that a pipeline under
# `set -o pipefail` sees the same as with `cat`. The command ends quietly: no traceback.
EXIT_BROKEN_PIPE = 141


def entry() -> None:
    """The console script. Output into a closed pipe ends the command with
    EXIT_BROKEN_PIPE. After a streaming job, the runner's threads (gRPC, the SDK
    harness) can still be inside native code when the interpreter finalizes; a daemon
    thread caught there is unwound by force, which aborts the process ("FATAL: exception
    not rethrown", as after a 1M-event replay) although every row had landed. Its work done
    and its database closed, such a process exits at once. (The writer's threads are not the
    cause: with them joined to the end before the database closes, the abort still came,
    right after the runner's service was torn down at finalization.) The exit handlers run
    first: one of them stops the runner's job server, Prism, which would otherwise outlive
    the job."""
    try:
        code = main()
        sys.stdout.flush()  # what is still buffered may meet the closed pipe too
    except BrokenPipeError:
        # Whatever is left in the buffer goes nowhere: without this, the interpreter's
        # final flush would fail again and print "Exception ignored ... BrokenPipeError".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = EXIT_BROKEN_PIPE
    if _ended_job:
        names = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
        logging.getLogger(__name__).debug("exiting past threads %s", names)
        atexit._run_exitfuncs()  # logging's shutdown among them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()

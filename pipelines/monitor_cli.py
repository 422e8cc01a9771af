"""`removal-audit monitor`: serve an audit database's figures as Prometheus metrics.

    removal-audit monitor --db audit.snapshot.duckdb          # http://127.0.0.1:9481/metrics
    removal-audit monitor --host 0.0.0.0 --port 9100 --refresh 30
    removal-audit monitor --once                              # print the exposition, exit
    removal-audit monitor --once --as-of 2021-03-01T00:00:00Z # the figures as they stood then

The database is opened read-only (`connect_auditor`), once per refresh and closed again, so
it serves a batch database or the auditors' snapshot of a running streaming job (a snapshot
replaced meanwhile is picked up at the next refresh) and never changes it. A database that
is missing or cannot be read is logged and the last figures are kept. The families and
their names are listed in pipelines/metrics.py. --as-of backfills: the backlog, breach and
deadline figures, and the alerts firing, as of that event time (e.g. to backtest alert
thresholds against history). SIGTERM or SIGINT stop it (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import duckdb
from prometheus_client import generate_latest

from connectors.duckdb_metrics import read_metrics
from connectors.duckdb_reader import connect_auditor
from pipelines.metrics import AuditCollector, serve_metrics
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 9481
DEFAULT_REFRESH_S = 15.0


def event_time(text: str) -> datetime:
    """An ISO 8601 time for --as-of; without an offset it is UTC (as `sql --param` reads it).
    Example: "2021-03-01T00:00:00Z" -> datetime(2021, 3, 1, tzinfo=UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from error
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser(
        "monitor",
        help="serve the audit database's figures as Prometheus metrics (read-only)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument(
        "--db",
        type=Path,
        help="DuckDB file, opened read-only (default: settings.database; while the streaming "
        "job runs, its <db>.snapshot.duckdb)",
    )
    m.add_argument("--host", help="address to bind (default: settings.metrics_host, 127.0.0.1)")
    m.add_argument(
        "--port",
        type=int,
        help=f"port to serve on (default: settings.metrics_port, else {DEFAULT_PORT}; 0: any)",
    )
    m.add_argument(
        "--refresh",
        type=_positive,
        default=DEFAULT_REFRESH_S,
        metavar="SECONDS",
        help=f"re-read the database this often (default {DEFAULT_REFRESH_S:g})",
    )
    m.add_argument(
        "--as-of",
        type=event_time,
        metavar="ISO-TIME",
        help="the figures as of this event time (default: the data horizon; alerts firing now)",
    )
    m.add_argument(
        "--once", action="store_true", help="print the metrics (text exposition) and exit"
    )
    m.set_defaults(func=cmd_monitor)


def _snapshot_of(database: Path) -> Path:
    return database.with_name(f"{database.stem}.snapshot.duckdb")


def refresh(collector: AuditCollector, database: Path, as_of: datetime | None) -> bool:
    """Read the database's figures into `collector`; False (logged, last figures kept) when
    it is missing or cannot be read."""
    try:
        con = connect_auditor(database)
    except (OSError, duckdb.Error) as error:
        hint = ""
        if "lock" in str(error).lower():
            hint = f" (held by its writer? monitor its snapshot, {_snapshot_of(database)})"
        log.warning("cannot open %s, keeping the last figures: %s%s", database, error, hint)
        return False
    try:
        state = read_metrics(con, as_of=as_of)
    except duckdb.Error as error:
        log.warning("cannot read the figures of %s, keeping the last ones: %s", database, error)
        return False
    finally:
        con.close()
    collector.update(state)
    return True


def cmd_monitor(args: argparse.Namespace) -> int:
    settings = Settings(**({"database": args.db} if args.db is not None else {}))
    database: Path = settings.database
    collector = AuditCollector()
    if args.once:
        # One reading asked for: a database that cannot be read is an error, not a last state.
        con = connect_auditor(database)
        try:
            collector.update(read_metrics(con, as_of=args.as_of))
        finally:
            con.close()
        sys.stdout.write(generate_latest(collector.registry).decode("utf-8"))
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host = args.host if args.host is not None else settings.metrics_host
    port = args.port if args.port is not None else (settings.metrics_port or DEFAULT_PORT)
    return serve(collector, database, host, port, args.refresh, args.as_of)


def serve(
    collector: AuditCollector,
    database: Path,
    host: str,
    port: int,
    refresh_s: float,
    as_of: datetime | None,
) -> int:
    """Serve until SIGTERM or SIGINT, re-reading `database` every `refresh_s` seconds."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {
        s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        refresh(collector, database, as_of)
        try:
            server = serve_metrics(host, port, collector)
        except OSError as error:
            print(f"removal-audit monitor: cannot serve at {host}:{port}: {error}", file=sys.stderr)
            return 2
        try:
            log.info(
                "serving the metrics of %s at %s (refreshed every %g s)",
                database,
                server.url,
                refresh_s,
            )
            while not stop.wait(refresh_s):
                refresh(collector, database, as_of)
        finally:
            server.close()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0

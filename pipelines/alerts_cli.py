"""`removal-audit alerts`: what the alert rules fired, and delivery of queued notifications.

    removal-audit alerts                 # episodes firing now, with their evidence
    removal-audit alerts --all           # every episode, resolved ones included
    removal-audit alerts --send          # deliver the queued notifications now, backoff
                                         # or not (webhook; the alerts topic with --kafka)

Alerts are evaluated by the pipeline itself (batch loads and the streaming job), in event
time; this command only reads them, or sends what the outbox still holds (e.g. after the
webhook receiver was down during a batch load). A running streaming job holds its
database and delivers by itself: read its snapshot (`--db SNAPSHOT`) instead.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from connectors.duckdb_reader import connect_auditor
from connectors.duckdb_sink import connect_writer
from pipelines.monitoring import deliver_after_load, dispatcher_from_settings
from pipelines.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "alerts",
        help="list alert episodes; deliver queued alert notifications",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--db", type=Path, help="DuckDB file (default: settings.database)")
    a.add_argument("--all", action="store_true", help="resolved episodes too")
    a.add_argument("--send", action="store_true", help="deliver queued notifications now")
    a.add_argument("--kafka", action="store_true", help="with --send: the alerts topic too")
    a.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = Settings()
    database = args.db or settings.database
    if not database.is_file():
        raise FileNotFoundError(f"no audit database at {database}")
    if args.send:
        dispatcher = dispatcher_from_settings(settings, kafka=args.kafka)
        if not dispatcher.sinks:
            print("no alert sink configured (REMOVAL_AUDIT_ALERT_WEBHOOK_URL, --kafka)")
            return 2
        con = connect_writer(database)
        try:
            # Asked for now: every queued notification is due, whatever its backoff said.
            con.execute(
                "UPDATE alert_notifications SET next_attempt_at = ? WHERE delivered_at IS NULL",
                [datetime.now(UTC)],
            )
            report = deliver_after_load(con, dispatcher)
        finally:
            dispatcher.close()
            con.close()
        print(f"delivered {report.delivered}, still queued {report.failed}")
        for error in report.errors:
            print(f"  {error}")
        return 0 if not report.failed else 1
    con = connect_auditor(database)
    try:
        rows = con.execute(
            "SELECT rule, severity, fired_at, resolved_at, summary, "
            "(SELECT count(*) FROM alert_notifications n WHERE n.alert_id = a.alert_id "
            " AND n.delivered_at IS NULL) AS queued "
            "FROM alerts AS a WHERE ? OR resolved_at IS NULL ORDER BY fired_at, rule",
            [args.all],
        ).fetchall()
    finally:
        con.close()
    out = sys.stdout
    if not rows:
        out.write("no alert is firing\n" if not args.all else "no alert episode recorded\n")
    for rule, severity, fired_at, resolved_at, summary, queued in rows:
        until = "firing" if resolved_at is None else f"resolved {resolved_at:%Y-%m-%d %H:%M}"
        note = f" [{queued} notification(s) queued]" if queued else ""
        out.write(f"{fired_at:%Y-%m-%d %H:%M} {severity:8} {rule}: {summary} ({until}){note}\n")
    return 0

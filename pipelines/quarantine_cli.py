"""`removal-audit quarantine`: review quarantined records and replay the ones intake now
accepts.

    summary                 records by topic and reason code, first and last source position
    show ID                 one record: every field, the raw bytes in hex, what intake says now
    replay [--reason R]... [--id ID]... [--dry-run] [--include-files]
                            intake again with the current schema catalog and rules; produce
                            the records it now accepts back to their source topic

The database is opened read-only (`connect_auditor`), so this runs against the auditors'
snapshot while the streaming job holds the database, and it writes nothing. The record of a
replay is therefore the Kafka log itself: each replayed record carries the header
`removal-audit.replay-of: <quarantine_id>`, key and value byte for byte.

Where a replay goes: `<prefix><topic>` (the quarantine row's logical topic, prefix from
--topic-prefix or the settings, as `publish` does), which for a record quarantined by the
streaming job is the topic it was read from (the output says when the prefix differs from
its source_ref). A record quarantined from an Avro file by a batch run has no source topic:
it is replayed only with --include-files, into that same `<prefix><topic>`, i.e. into the
streaming path. A replay creates no topic.

"Now accepted" means intake accepts the bytes and their event_id is not landed yet: a record
whose event_id already landed (e.g. an EVENT_ID_CONFLICT) would only be counted again as a
duplicate delivery or quarantined again, so it is reported as ALREADY_LANDED and not sent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import duckdb

from connectors.duckdb_reader import DatabaseInUse, connect_auditor
from connectors.errors import ReasonCode
from connectors.schema_store import SchemaStore
from pipelines.intake import IntakeRules
from pipelines.quarantine_review import (
    QuarantineRecord,
    Verdict,
    has_table,
    judge,
    plan_replay,
    read_records,
)
from pipelines.settings import Settings


class _Refusal(Exception):
    """A command that cannot run as asked (exit status 2), e.g. an unknown quarantine_id."""


def summary(con: duckdb.DuckDBPyConnection, out: TextIO) -> None:
    from pipelines.sql_cli import print_table

    forwarded = has_table(con, "quarantine_forwarded")
    # A database made before quarantine_forwarded existed: forwarded is unknown (NULL).
    positions = (
        "quarantine_forwarded"
        if forwarded
        else "(SELECT NULL::VARCHAR AS quarantine_id, NULL::BIGINT AS kafka_offset WHERE false)"
    )
    rows = con.execute(
        f"""
        WITH q AS (
            SELECT quarantine_id, topic, reason_code, source_ref,
                   regexp_extract(source_ref, '^(.*)#', 1) AS src,
                   TRY_CAST(regexp_extract(source_ref, '#([0-9]+)$', 1) AS BIGINT) AS pos
            FROM quarantine
        ), f AS (SELECT quarantine_id, kafka_offset FROM {positions})
        SELECT q.topic, q.reason_code, count(*) AS records,
               CASE WHEN {str(forwarded).lower()} THEN count(f.kafka_offset) END AS forwarded,
               arg_min(q.source_ref, (q.src, q.pos)) AS first,
               arg_max(q.source_ref, (q.src, q.pos)) AS last
        FROM q LEFT JOIN f USING (quarantine_id)
        GROUP BY q.topic, q.reason_code
        ORDER BY q.topic, q.reason_code
        """
    ).fetchall()
    total = sum(int(r[2]) for r in rows)
    out.write(f"{total:,} quarantined record{'s' if total != 1 else ''}")
    if forwarded:
        on_topic = sum(int(r[3]) for r in rows)
        out.write(f", {on_topic:,} of them on the quarantine topic")
    out.write("\n")
    if rows:
        columns = ["topic", "reason_code", "records", "forwarded", "first", "last"]
        print_table(columns, rows, out)


def show(
    con: duckdb.DuckDBPyConnection,
    quarantine_id: str,
    verdict_of: Callable[[QuarantineRecord], Verdict],
    out: TextIO,
) -> None:
    found = read_records(con, ids=[quarantine_id])
    if not found:
        raise _Refusal(f"no quarantined record {quarantine_id!r} (see `quarantine summary`)")
    record = found[0]
    verdict = verdict_of(record)
    fields = [
        ("quarantine_id", record.quarantine_id),
        ("topic", record.topic),
        ("source_ref", record.source_ref),
        ("reason_code", record.reason_code),
        ("message", record.message),
        ("event_id", record.event_id or "NULL"),
        ("forwarded", record.forwarded or "no"),
        ("intake now", f"{verdict.code}: {verdict.detail}"),
    ]
    for name, value in fields:
        out.write(f"{name:<14} {value}\n")
    for name, data in (("raw_key", record.raw_key), ("raw_value", record.raw_value)):
        if data is None:
            out.write(f"{name:<14} NULL\n")
            continue
        out.write(f"{name:<14} {len(data)} byte{'s' if len(data) != 1 else ''}\n")
        for line in hexdump(data):
            out.write(f"  {line}\n")


def hexdump(data: bytes) -> Iterator[str]:
    """'00000000  c3 01 6f 2e ...  |..o.|', 16 bytes a line."""
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{offset:08x}  {hexes:<47}  |{text}|"


def replay(
    con: duckdb.DuckDBPyConnection,
    args: argparse.Namespace,
    settings: Settings,
    verdict_of: Callable[[QuarantineRecord], Verdict],
    out: TextIO,
) -> None:
    # Imported when used, as cli.py does: sql_cli binds sys.stdout as a default at import.
    from pipelines.sql_cli import print_table

    known = {r for (r,) in con.execute("SELECT quarantine_id FROM quarantine").fetchall()}
    unknown = sorted(set(args.id) - known)
    if unknown:
        raise _Refusal(f"no quarantined record {', '.join(map(repr, unknown))}")
    records = read_records(con, ids=args.id, reasons=args.reason)
    if not records:
        out.write("no quarantined records match\n")
        return
    prefix = settings.kafka_topic_prefix if args.topic_prefix is None else args.topic_prefix
    planned = plan_replay(records, verdict_of, prefix, args.include_files)
    sending = [p for p in planned if p.target is not None]
    positions: dict[str, str] = {}
    if sending and not args.dry_run:
        from connectors.quarantine_replay import Replay, produce_replays
        from connectors.quarantine_topic import QuarantineTopicSettings

        topic_settings = QuarantineTopicSettings.from_settings(
            settings,
            **({"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}),
        )
        written = produce_replays(
            topic_settings,
            [
                Replay(p.record.quarantine_id, p.target, p.record.raw_key, p.record.raw_value)
                for p in sending
                if p.target is not None
            ],
        )
        positions = {w.quarantine_id: w.position for w in written}
    print_table(
        ["quarantine_id", "was", "now", "replay", "detail"],
        [
            (
                p.record.quarantine_id,
                p.record.reason_code,
                p.verdict.code,
                positions.get(p.record.quarantine_id, p.target or "-"),
                p.note,
            )
            for p in planned
        ],
        out,
    )
    accepted = sum(p.verdict.accepted for p in planned)
    refused = len(planned) - accepted
    held = accepted - len(sending)
    tail = f"; {held} accepted but from a file, not sent" if held else ""
    if args.dry_run:
        out.write(
            f"dry run: {len(sending)} of {len(planned)} would be replayed, "
            f"{refused} still refused{tail}; nothing produced\n"
        )
    else:
        out.write(
            f"replayed {len(sending)} of {len(planned)} (header removal-audit.replay-of), "
            f"{refused} still refused{tail}\n"
        )


def cmd_quarantine(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from connectors.quarantine_topic import QuarantineTopicError

    out = out or sys.stdout
    settings = Settings(**({"database": args.db} if args.db is not None else {}))
    try:
        con = connect_auditor(settings.database)
    except DatabaseInUse as error:
        print(f"removal-audit quarantine: {error}", file=sys.stderr)
        return 2
    try:
        store = SchemaStore.load(settings.schemas_dir)
        rules = IntakeRules.from_settings(settings)

        def verdict_of(record: QuarantineRecord) -> Verdict:
            return judge(record, store, rules, con)

        if args.quarantine_command == "summary":
            summary(con, out)
        elif args.quarantine_command == "show":
            show(con, args.quarantine_id, verdict_of, out)
        else:
            replay(con, args, settings, verdict_of, out)
    except _Refusal as error:
        print(f"removal-audit quarantine: {error}", file=sys.stderr)
        return 2
    except QuarantineTopicError as error:
        print(f"removal-audit quarantine: {error}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `quarantine` on the `removal-audit` parser's subparsers."""
    q: argparse.ArgumentParser = subparsers.add_parser(
        "quarantine",
        help="review quarantined records; replay the ones intake now accepts",
        description="Review quarantined records and replay the ones intake now accepts. "
        "Reads the database read-only (it works on the streaming job's snapshot) and writes "
        "nothing to it: a replay is recorded in Kafka itself, each replayed record carrying "
        "the header removal-audit.replay-of: <quarantine_id>.",
    )
    sub = q.add_subparsers(dest="quarantine_command", required=True)

    def with_db(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--db",
            type=Path,
            help="DuckDB file, opened read-only (default: settings.database; while the "
            "streaming job runs, its <db>.snapshot.duckdb)",
        )
        return sp

    with_db(
        sub.add_parser(
            "summary", help="records by topic and reason code, first and last source position"
        )
    )
    s = with_db(
        sub.add_parser(
            "show", help="one record: every field, raw bytes in hex, what intake says now"
        )
    )
    s.add_argument("quarantine_id", metavar="ID", help="its quarantine_id (= source_ref)")

    r = with_db(
        sub.add_parser(
            "replay",
            help="run intake again; produce what it now accepts back to its source topic",
            description="Run intake again, with the current schema catalog and rules, over "
            "the selected quarantined records (all without --reason/--id); report which it "
            "now accepts and why the others are still refused; without --dry-run, produce "
            "the accepted ones to <prefix><topic>, key and value byte for byte, with the "
            "header removal-audit.replay-of: <quarantine_id>. The database is read-only "
            "here, so Kafka is the record of a replay: find replays by that header. Records "
            "quarantined from Avro files (batch runs) have no source topic and are sent only "
            "with --include-files. Topics are never created.",
        )
    )
    r.add_argument(
        "--reason",
        action="append",
        default=[],
        choices=[c.value for c in ReasonCode],
        metavar="REASON",
        help="only records quarantined for this reason code (repeatable)",
    )
    r.add_argument(
        "--id",
        action="append",
        default=[],
        metavar="ID",
        help="only this quarantine_id (repeatable; with --reason: either)",
    )
    r.add_argument("--dry-run", action="store_true", help="report only; produce nothing")
    r.add_argument(
        "--include-files",
        action="store_true",
        help="also send records quarantined from Avro files, to <prefix><topic>",
    )
    r.add_argument("--bootstrap-servers", help="default: settings.kafka_bootstrap_servers")
    r.add_argument("--topic-prefix", help="prefix of the topic names (default: settings)")
    q.set_defaults(func=cmd_quarantine)
    return q

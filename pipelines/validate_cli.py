"""`removal-audit validate`: re-run the data-quality suites on demand, build Data Docs,
list and accept held batches.

    removal-audit validate                       # every row; a pass releases held batches
    removal-audit validate --docs out/docs       # also writes Data Docs HTML (index.html)
    removal-audit validate --holds               # what the gate holds, and why
    removal-audit validate --accept BATCH_ID --note "policy table fixed upstream"

The results are recorded in batch_validations. A running streaming job holds its database:
validate the auditors' snapshot instead (`--db SNAPSHOT --read-only`: printed, not
recorded), and stop the job to accept a batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

import duckdb

from connectors import duckdb_quality as dq
from connectors.duckdb_reader import DatabaseInUse, connect_auditor
from connectors.duckdb_sink import connect_writer
from pipelines.settings import Settings

EXIT_FAILED = 1


class ValidationUnavailable(RuntimeError):
    """The database cannot be validated as asked (in use, or read-only for an accept)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser(
        "validate",
        help="re-run the data-quality suites (expectations/) on the audit database",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("--db", type=Path, help="DuckDB file (default: settings.database)")
    v.add_argument("--docs", type=Path, metavar="DIR", help="write Data Docs HTML into DIR")
    v.add_argument(
        "--read-only", action="store_true", help="do not record the results (e.g. a snapshot)"
    )
    v.add_argument("--holds", action="store_true", help="list the held batches and stop")
    v.add_argument("--accept", metavar="BATCH_ID", help="accept a held batch (needs --note)")
    v.add_argument("--note", default="", help="why the held batch is accepted")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    settings = Settings()
    database = args.db or settings.database
    if not database.is_file():
        raise FileNotFoundError(f"no audit database at {database}")
    return validate(
        database,
        settings,
        docs=args.docs,
        read_only=args.read_only,
        holds=args.holds,
        accept=args.accept,
        note=args.note,
        out=sys.stdout,
    )


def _connect(database: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return connect_auditor(database) if read_only else connect_writer(database)
    except (duckdb.IOException, DatabaseInUse) as error:
        # A reader is refused only by a writer's lock; other errors say what they are.
        if read_only and not isinstance(error, DatabaseInUse):
            raise
        raise ValidationUnavailable(
            f"{database} is in use by another process (a running streaming job?): validate "
            "its snapshot instead with --db SNAPSHOT --read-only"
        ) from error


def validate(
    database: Path,
    settings: Settings,
    *,
    docs: Path | None = None,
    read_only: bool = False,
    holds: bool = False,
    accept: str | None = None,
    note: str = "",
    out: TextIO = sys.stdout,
) -> int:
    # Listing the holds only reads: a writer's connection would apply the schema, and the
    # file would change under whoever listed them.
    con = _connect(database, read_only or holds)
    writable = not read_only
    try:
        if holds:
            return _print_holds(con, out)
        if accept is not None:
            if not writable:
                raise ValidationUnavailable("--accept records the acceptance: not with --read-only")
            try:
                found = dq.accept(con, accept, note)
            except (KeyError, ValueError) as error:
                raise ValidationUnavailable(str(error.args[0])) from error
            out.write(
                f"accepted {found.path} batch {found.batch_id} (held since "
                f"{found.held_at.isoformat()} by suites {found.failed_suites})\n"
            )
            return 0
        return _validate_all(con, writable, settings, docs, out)
    finally:
        con.close()


def _validate_all(
    con: duckdb.DuckDBPyConnection,
    writable: bool,
    settings: Settings,
    docs: Path | None,
    out: TextIO,
) -> int:
    from pipelines.quality_gate import QualityGate

    gate = QualityGate.from_settings(settings, docs_dir=docs.resolve() if docs else None)
    outcome = gate.evaluate(con, None)
    out.write(outcome.describe() + "\n")
    if writable:
        held = [h.batch_id for h in dq.open_holds(con)]
        con.begin()
        gate.record(con, outcome, path="on-demand", batch_ids=held, hold=False)
        con.commit()
        if held and outcome.passed:
            out.write(f"released {len(held)} held batch(es)\n")
    out.write(f"validation {outcome.validation_id}: {'passed' if outcome.passed else 'FAILED'}\n")
    if docs is not None:
        out.write(f"Data Docs: {(docs / 'index.html').resolve()}\n")
    return 0 if outcome.passed else EXIT_FAILED


def _print_holds(con: duckdb.DuckDBPyConnection, out: TextIO) -> int:
    holds = dq.open_holds(con)
    if not holds:
        out.write("no held batches\n")
        return 0
    for h in holds:
        failures = con.execute(
            "SELECT suite, failures FROM batch_validations WHERE validation_id = ? "
            "AND NOT success ORDER BY suite",
            [h.validation_id],
        ).fetchall()
        out.write(
            f"{h.path} batch {h.batch_id} held since {h.held_at.isoformat()} "
            f"(validation {h.validation_id})\n"
        )
        for suite, found in failures:
            for f in json.loads(found):
                out.write(
                    f"  {suite}: {f['expectation']}({', '.join(f['columns'])}) "
                    f"{f['unexpected']} unexpected; {f['note']}\n"
                )
    return EXIT_FAILED

"""The benchmark's measured steps that are not the project's own command line, each run as
its own process by `bench/run.py` (so its wall time and peak memory are its own) and
printing one JSON object on its last line.

    python -m bench.components floor --db F --bootstrap B --prefix P
    python -m bench.components sql --db F
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import duckdb

from bench.floor import run_floor
from bench.stream import end_offsets
from pipelines.intake import ACTIONS_TOPIC, REQUESTS_TOPIC


def floor(args: argparse.Namespace) -> dict[str, Any]:
    ends = end_offsets(args.bootstrap, [args.prefix + REQUESTS_TOPIC, args.prefix + ACTIONS_TOPIC])
    result = run_floor(args.db, args.bootstrap, args.prefix, ends)
    return {
        "messages": result.messages,
        "landed": result.landed,
        "undecodable": result.undecodable,
        "seconds": result.seconds,
    }


def sql(args: argparse.Namespace) -> dict[str, Any]:
    from bench.sql_alternative import compute

    con = duckdb.connect(args.db)
    try:
        started = time.perf_counter()
        counts = compute(con)
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
    finally:
        con.close()
    return {"seconds": seconds, "rows": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.components")
    sub = parser.add_subparsers(dest="step", required=True)
    f = sub.add_parser("floor", help="Kafka -> fastavro -> DuckDB, no logic")
    f.add_argument("--db", required=True)
    f.add_argument("--bootstrap", required=True)
    f.add_argument("--prefix", required=True)
    s = sub.add_parser("sql", help="the audit's tables in plain DuckDB SQL over the floor's")
    s.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    result = {"floor": floor, "sql": sql}[args.step](args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

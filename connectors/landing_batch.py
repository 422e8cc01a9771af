"""A streaming batch to land: Arrow tables of audit rows, the source offsets they cover and
the releases of the request histories among them, with its deterministic id and the checks
it must pass before anything is written (`connectors.duckdb_stream_sink` lands it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.duckdb_sink import AUDIT_TABLES
from connectors.stream_offsets import Offsets, PartitionKey, Run, normalise
from pipelines.rows import SCHEMAS

# The release each landed request history comes from (see sql/ddl/130_stream_releases.sql).
RELEASES_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("watermark", pa.timestamp("us", tz="UTC")),
        ("run", pa.int32()),
        ("revision", pa.int32()),
    ]
)


@dataclass(frozen=True)
class LandingBatch:
    """Rows to land, the source offsets they cover and the releases of the request
    histories among them.

    Example: LandingBatch(batch_id="3b1f...", offsets={("removal.requests", 0): ((100, 199),)},
    tables={"request_events": <pa.Table>, "requests": <pa.Table>},
    releases=<pa.Table: RELEASES_SCHEMA>, watermark=datetime(2021, 3, 1, tzinfo=UTC))

    `releases` must hold one row per request in `requests` when given; without it request
    histories replace the landed ones unconditionally. `watermark`: everything read up to
    this event time is landed with this batch (recorded on the current run).
    """

    batch_id: str
    offsets: Mapping[PartitionKey, Sequence[Run] | Run]
    tables: Mapping[str, pa.Table]
    releases: pa.Table | None = None
    watermark: datetime | None = None

    @classmethod
    def covering(
        cls,
        offsets: Mapping[PartitionKey, Sequence[Run] | Run],
        tables: Mapping[str, pa.Table],
        releases: pa.Table | None = None,
        watermark: datetime | None = None,
    ) -> LandingBatch:
        """A batch whose id is a hash of the offsets it covers and of its rows: the same
        rows for the same offsets (a replay) give the same id, so the ledger recognises it."""
        batch_id = batch_id_for(offsets, tables, releases, watermark)
        return cls(batch_id, offsets, tables, releases, watermark)


def batch_id_for(
    offsets: Mapping[PartitionKey, Sequence[Run] | Run],
    tables: Mapping[str, pa.Table] | None = None,
    releases: pa.Table | None = None,
    watermark: datetime | None = None,
) -> str:
    """Deterministic batch id (32 hex) from the offsets and the rows.

    Example: batch_id_for({("t", 0): (0, 9)}) == batch_id_for({("t", 0): [(0, 9)]})."""
    basis = [offsets_json(normalise(offsets)), None if watermark is None else str(watermark)]
    digest = hashlib.sha256(json.dumps(basis).encode())
    named = sorted((tables or {}).items())
    if releases is not None:
        named.append(("\x00releases", releases))
    for name, table in named:
        digest.update(name.encode() + b"\x00")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:32]


def offsets_json(offsets: Offsets) -> list[dict[str, Any]]:
    return [
        {"topic": topic, "partition": partition, "first": first, "last": last}
        for (topic, partition), runs in sorted(offsets.items())
        for first, last in runs
    ]


def check_releases(batch: LandingBatch) -> None:
    if batch.releases is None:
        return
    if not batch.releases.schema.equals(RELEASES_SCHEMA, check_metadata=False):
        raise ValueError(f"releases: schema differs from {RELEASES_SCHEMA}")
    released = set(batch.releases.column("request_id").to_pylist())
    requests = batch.tables.get("requests")
    landed = set() if requests is None else set(requests.column("request_id").to_pylist())
    if released != landed or len(released) != batch.releases.num_rows:
        raise ValueError("releases must hold exactly one row per request of the batch")


def check_tables(tables: Mapping[str, pa.Table]) -> None:
    # Checked before anything is written: BY NAME would fill a missing column with NULL
    # and DuckDB would cast a wrongly typed one, both silently.
    for name, rows in tables.items():
        if name not in AUDIT_TABLES:
            raise ValueError(f"{name!r} is not an audit table ({', '.join(AUDIT_TABLES)})")
        if not rows.schema.equals(SCHEMAS[name], check_metadata=False):
            raise ValueError(
                f"{name}: schema differs from pipelines.rows.SCHEMAS[{name!r}]:\n"
                f"got {rows.schema}\nexpected {SCHEMAS[name]}"
            )
        _refuse_repeated_keys(name, rows)


def _refuse_repeated_keys(table: str, rows: pa.Table) -> None:
    # Two rows for one key in a batch would break the table's grain (derived tables have no
    # primary key to catch it), and which one should win is unknowable here.
    key = [c.strip() for c in AUDIT_TABLES[table].split(",")]
    counts = rows.group_by(key).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        raise ValueError(
            f"{table}: the batch holds several rows for ({', '.join(key)}) = "
            f"{repeated.select(key).slice(0, 1).to_pylist()[0]}"
        )

"""Keep the delivery account consistent, and the same whatever order copies of an event
arrive in or however runs split them.

Of the copies of an event_id the lowest source position is the event row, as in the batch
path. A lower copy that reaches the dedupe stage after a higher one was kept is sent on
as a new event row (`pipelines.streaming_dedupe`), possibly after the higher one landed;
and a run killed midway may land a duplicate-delivery row before the row of the copy it
kept. Left alone, one source position
would then be both an event row and a duplicate row (or neither), or the event row would
name whichever copy landed first. So, in the transaction that lands a batch, for the event
ids it touches:

* a staged event row at a lower position than the landed copy, with the same content,
  replaces it, and the landed copy's position becomes a duplicate-delivery row (other
  content never replaces a landed row: dedupe quarantines those);
* a staged event row skipped because its event_id is already landed from another position
  becomes a duplicate-delivery row of the landed copy;
* a duplicate-delivery row whose position is in fact the landed copy is removed;
* every duplicate row names the landed copy as `kept_source_ref`.

Afterwards every position is in exactly one of the event, duplicate or quarantine tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

_TOPICS = {"request_events": "removal.requests", "action_events": "removal.actions"}
# Not content: where and with which writer schema a copy came (they may differ by copy).
_PROVENANCE = ("source_ref", "schema_version")


def reconcile_deliveries(con: duckdb.DuckDBPyConnection, staged: Mapping[str, str]) -> None:
    """`staged`: the batch's relations by table name (only event and duplicate tables are
    used). Call after the batch's rows are inserted, inside its transaction."""
    touched = [
        f"SELECT event_id FROM {staged[table]}"
        for table in ("request_events", "action_events", "duplicate_deliveries")
        if table in staged
    ]
    if not touched:
        return
    ids = " UNION ".join(touched)
    for table, topic in _TOPICS.items():
        if table not in staged:
            continue
        _move_to_lower_copies(con, table, topic, staged[table])
        con.execute(
            "INSERT INTO duplicate_deliveries BY NAME "
            f"SELECT s.source_ref, '{topic}' AS topic, s.event_id, t.source_ref AS kept_source_ref "
            f"FROM {staged[table]} AS s JOIN {table} AS t USING (event_id) "
            "WHERE t.source_ref <> s.source_ref AND NOT EXISTS "
            "(SELECT 1 FROM duplicate_deliveries AS d WHERE d.source_ref = s.source_ref)"
        )
    landed = (
        f"SELECT event_id, source_ref FROM request_events WHERE event_id IN ({ids}) "
        f"UNION ALL SELECT event_id, source_ref FROM action_events WHERE event_id IN ({ids})"
    )
    con.execute(
        "DELETE FROM duplicate_deliveries WHERE event_id IN "
        f"({ids}) AND source_ref IN (SELECT source_ref FROM ({landed}))"
    )
    con.execute(
        "UPDATE duplicate_deliveries AS d SET kept_source_ref = e.source_ref "
        f"FROM ({landed}) AS e WHERE d.event_id = e.event_id "
        "AND d.kept_source_ref <> e.source_ref"
    )


def _move_to_lower_copies(
    con: duckdb.DuckDBPyConnection, table: str, topic: str, staged: str
) -> None:
    """Staged rows that are the same event as a landed row, at a lower position, take its
    place; the landed row's position becomes a duplicate row."""
    described = con.execute(f"SELECT * FROM {table} LIMIT 0")
    columns = [c[0] for c in described.description if c[0] not in _PROVENANCE]
    described.fetchall()  # DuckDB refuses register/unregister while a result is open
    same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM t.{c}" for c in columns)
    # Usually none; fetched, so a batch without lower copies runs no statement more.
    moves = con.execute(
        "SELECT s.event_id, s.source_ref, t.source_ref "
        f"FROM {staged} AS s JOIN {table} AS t ON s.event_id = t.event_id "
        f"WHERE {_order('s.source_ref')} < {_order('t.source_ref')} AND {same}"
    ).fetchall()
    for event_id, lower, landed in moves:
        con.execute(
            "INSERT INTO duplicate_deliveries BY NAME SELECT ? AS source_ref, ? AS topic, "
            "? AS event_id, ? AS kept_source_ref WHERE NOT EXISTS "
            "(SELECT 1 FROM duplicate_deliveries WHERE source_ref = ?)",
            [landed, topic, event_id, lower, landed],
        )
        con.execute(f"DELETE FROM {table} WHERE event_id = ?", [event_id])
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT * FROM {staged} WHERE source_ref = ?", [lower]
        )


def _order(ref: str) -> str:
    """A source position `<source>#<offset>` as (source, offset): the order copies are
    kept in (`pipelines.transforms.delivery_order`)."""
    return f"(split_part({ref}, '#', 1), CAST(split_part({ref}, '#', 2) AS BIGINT))"

"""Keep the delivery account consistent when runs disagree on which copy of an event was
kept.

A streaming run keeps the first delivery of an event_id it sees, and a run killed midway
may land a duplicate-delivery row before the row of the copy it kept; the next run, not
knowing that copy, may keep another one. Left alone, one source position would then be
both an event row and a duplicate row (or neither). So, in the transaction that lands a
batch, for the event ids it touches:

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

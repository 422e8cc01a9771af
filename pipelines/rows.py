"""Landed rows: one Arrow schema per DuckDB table, and the functions that build the rows.

The DuckDB DDL in `sql/ddl/` is the contract; these schemas must carry the same column
names (the loader inserts BY NAME) and compatible types. Row ids are deterministic, so a
replay lands the same rows.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.intake import Accepted, Quarantined
from pipelines.model import (
    ActionEvent,
    Disposition,
    RequestEvent,
    RequestLifecycle,
    Transition,
)

Row = dict[str, Any]

_TS = pa.timestamp("ms", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "request_events": pa.schema(
        [
            ("event_id", pa.string()),
            ("request_id", pa.string()),
            ("event_type", pa.string()),
            ("authority", pa.string()),
            ("authority_kind", pa.string()),
            ("jurisdiction", pa.string()),
            ("platform", pa.string()),
            ("content_id", pa.string()),
            ("content_type", pa.string()),
            ("category", pa.string()),
            ("legal_basis", pa.string()),
            ("requested_action", pa.string()),
            ("issued_at", _TS),
            ("withdrawn_at", _TS),
            ("event_time", _TS),
            ("schema_version", pa.int32()),
            ("source_ref", pa.string()),
        ]
    ),
    "action_events": pa.schema(
        [
            ("event_id", pa.string()),
            ("action_id", pa.string()),
            ("request_id", pa.string()),
            ("platform", pa.string()),
            ("content_id", pa.string()),
            ("action", pa.string()),
            ("jurisdiction", pa.string()),
            ("acted_at", _TS),
            ("schema_version", pa.int32()),
            ("source_ref", pa.string()),
        ]
    ),
    "requests": pa.schema(
        [
            ("request_id", pa.string()),
            ("event_id", pa.string()),
            ("platform", pa.string()),
            ("content_id", pa.string()),
            ("authority", pa.string()),
            ("authority_kind", pa.string()),
            ("jurisdiction", pa.string()),
            ("category", pa.string()),
            ("content_type", pa.string()),
            ("legal_basis", pa.string()),
            ("requested_action", pa.string()),
            ("issued_at", _TS),
            ("deadline_at", _TS),
            ("sla_seconds", pa.int64()),
            ("sla_rule_id", pa.string()),
            ("sla_default_used", pa.bool_()),
            ("breached", pa.bool_()),
            ("first_resolved_at", _TS),
            ("withdrawn_at", _TS),
        ]
    ),
    "lifecycle_transitions": pa.schema(
        [
            ("transition_id", pa.string()),
            ("request_id", pa.string()),
            ("seq", pa.int32()),
            ("transition", pa.string()),
            ("transition_at", _TS),
            ("disposition", pa.string()),
            ("cause_event_id", pa.string()),
        ]
    ),
    "sla_breaches": pa.schema(
        [
            ("request_id", pa.string()),
            ("platform", pa.string()),
            ("category", pa.string()),
            ("authority", pa.string()),
            ("jurisdiction", pa.string()),
            ("deadline_at", _TS),
            ("breached_at", _TS),
            ("disposition_at_breach", pa.string()),
            ("resolved_at", _TS),
        ]
    ),
    "backlog_daily": pa.schema(
        [
            ("as_of", _TS),
            ("category", pa.string()),
            ("platform", pa.string()),
            ("authority", pa.string()),
            ("open", pa.int64()),
            ("overdue", pa.int64()),
            ("declined", pa.int64()),
            ("unresolved", pa.int64()),
        ]
    ),
    "quarantine": pa.schema(
        [
            ("quarantine_id", pa.string()),
            ("topic", pa.string()),
            ("source_ref", pa.string()),
            ("reason_code", pa.string()),
            ("message", pa.string()),
            ("event_id", pa.string()),
            ("raw_key", pa.binary()),
            ("raw_value", pa.binary()),
        ]
    ),
    "duplicate_deliveries": pa.schema(
        [
            ("source_ref", pa.string()),
            ("topic", pa.string()),
            ("event_id", pa.string()),
            ("kept_source_ref", pa.string()),
        ]
    ),
}


def event_row(accepted: Accepted) -> Row:
    event = accepted.event
    base = {"schema_version": accepted.schema_version, "source_ref": accepted.origin.ref}
    if isinstance(event, RequestEvent):
        return {
            **event.to_avro(),
            "event_time": event.event_time,
            **base,
        }
    assert isinstance(event, ActionEvent)
    return {**event.to_avro(), **base}


def quarantine_row(q: Quarantined) -> Row:
    return {
        "quarantine_id": q.origin.ref,
        "topic": q.topic,
        "source_ref": q.origin.ref,
        "reason_code": q.reason.value,
        "message": q.message,
        "event_id": q.event_id,
        "raw_key": q.key,
        "raw_value": q.value,
    }


def request_row(lc: RequestLifecycle) -> Row:
    r = lc.request
    withdrawn = next((t.at for t in lc.transitions if t.transition is Transition.WITHDRAWN), None)
    return {
        "request_id": r.request_id,
        "event_id": r.event_id,
        "platform": r.platform,
        "content_id": r.content_id,
        "authority": r.authority,
        "authority_kind": r.authority_kind.value,
        "jurisdiction": r.jurisdiction,
        "category": r.category.value,
        "content_type": r.content_type,
        "legal_basis": r.legal_basis,
        "requested_action": r.requested_action,
        "issued_at": r.issued_at,
        "deadline_at": lc.deadline.due_at,
        "sla_seconds": int(lc.deadline.sla.total_seconds()),
        "sla_rule_id": lc.deadline.rule_id,
        "sla_default_used": lc.deadline.default_used,
        "breached": lc.breached,
        "first_resolved_at": lc.first_resolved_at,
        "withdrawn_at": withdrawn,
    }


def transition_rows(lc: RequestLifecycle) -> list[Row]:
    return [
        {
            "transition_id": t.transition_id,
            "request_id": t.request_id,
            "seq": t.seq,
            "transition": t.transition.value,
            "transition_at": t.at,
            "disposition": t.disposition.value,
            "cause_event_id": t.cause_event_id,
        }
        for t in lc.transitions
    ]


def breach_row(lc: RequestLifecycle) -> Row | None:
    """The request's deadline breach, if it had one, with its eventual resolution."""
    breach = next((t for t in lc.transitions if t.transition is Transition.BREACHED), None)
    if breach is None:
        return None
    resolved = next(
        (
            t.at
            for t in lc.transitions
            if t.seq > breach.seq and t.disposition is Disposition.RESOLVED_LATE
        ),
        None,
    )
    r = lc.request
    return {
        "request_id": r.request_id,
        "platform": r.platform,
        "category": r.category.value,
        "authority": r.authority,
        "jurisdiction": r.jurisdiction,
        "deadline_at": lc.deadline.due_at,
        "breached_at": breach.at,
        "disposition_at_breach": breach.disposition.value,
        "resolved_at": resolved,
    }

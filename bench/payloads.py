"""Kafka messages (key, value) for the rows of a `bench.plan.Plan`, encoded fast.

Values are single-object encoded events (C3 01, the 8-byte fingerprint of the subject's
reader version, the Avro body) as `connectors.avro_codec.encode_single_object` writes them;
keys are "platform/content_id". A body is joined from pieces encoded once per table entry
(`bench.encoding`), in the field order of the current schemas, which `PayloadEncoder`
checks when it starts. `expected_request` / `expected_action` give the same events the slow
way (pipelines.model dataclasses), to check a sample byte for byte.

Ids: requests "rq-<10 digits>" (event) and "<authority code>-<10 digits>" (request_id);
withdrawals "wd-<10 digits>"; actions "ac-<10 digits>" (event) and "pa-<10 digits>"
(action_id); malformed copies "mr-" / "ma-" and their position in the topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench import calibration as cal
from bench.encoding import (
    NULL_BRANCH,
    TIMESTAMP_BYTES,
    VALUE_BRANCH,
    avro_string,
    enum_index,
    fixed_digits,
    length_prefix,
    single_object_header,
    timestamp_varints,
)
from bench.plan import (
    ACTION_TYPES,
    CATEGORIES,
    CONTENT_TYPES,
    DUPLICATE,
    LEGAL_BASES,
    MALFORMED,
    REQUESTED_ACTIONS,
    Messages,
    Plan,
)
from connectors.avro_codec import SINGLE_OBJECT_MAGIC
from connectors.schema_store import FINGERPRINT_SIZE, SchemaStore
from pipelines.model import ActionEvent, ActionType, Category, RequestEvent, RequestEventType
from pipelines.scenarios.delivery import ACTIONS_SUBJECT, REQUESTS_SUBJECT

REQUEST_FIELDS = (
    "event_id",
    "request_id",
    "event_type",
    "authority",
    "authority_kind",
    "jurisdiction",
    "platform",
    "content_id",
    "content_type",
    "category",
    "legal_basis",
    "requested_action",
    "issued_at",
    "withdrawn_at",
)
ACTION_FIELDS = (
    "event_id",
    "action_id",
    "request_id",
    "platform",
    "content_id",
    "action",
    "jurisdiction",
    "acted_at",
)
ID_DIGITS = 10
CONTENT_DIGITS = 15
_ID = length_prefix(3 + ID_DIGITS)
_HEADER = len(SINGLE_OBJECT_MAGIC) + FINGERPRINT_SIZE


class PayloadEncoder:
    """Encodes a plan's messages; remembers the bytes of events delivered twice."""

    def __init__(self, plan: Plan, store: SchemaStore) -> None:
        self.plan = plan
        rq = store.reader(REQUESTS_SUBJECT).schema
        ac = store.reader(ACTIONS_SUBJECT).schema
        _check_fields(rq, REQUEST_FIELDS, ("withdrawn_at",))
        _check_fields(ac, ACTION_FIELDS, ("request_id", "jurisdiction"))
        self._rq_header = single_object_header(REQUESTS_SUBJECT, store)
        self._ac_header = single_object_header(ACTIONS_SUBJECT, store)
        authorities = cal.AUTHORITIES
        self._request_id = [
            length_prefix(len(a.code) + 1 + ID_DIGITS) + f"{a.code}-".encode() for a in authorities
        ]
        self._named = [VALUE_BRANCH + rid for rid in self._request_id]
        self._jurisdiction = [VALUE_BRANCH + avro_string(a.jurisdiction) for a in authorities]
        content_prefix = length_prefix(CONTENT_DIGITS)
        self._platform = [avro_string(p.name) + content_prefix for p in cal.PLATFORMS]
        self._key = [f"{p.name}/".encode() for p in cal.PLATFORMS]
        # event_type, authority, authority_kind, jurisdiction, platform and the content_id's
        # length, by (withdrawal, authority, platform) as `requests` indexes them.
        self._middle = [
            enum_index(rq, "event_type", event_type.value)
            + avro_string(a.name)
            + enum_index(rq, "authority_kind", a.kind.value)
            + avro_string(a.jurisdiction)
            + platform
            for event_type in (RequestEventType.ISSUED, RequestEventType.WITHDRAWN)
            for a in authorities
            for platform in self._platform
        ]
        # content_type, category, legal_basis, requested_action, as `requests` indexes them.
        self._tail = [
            enum_index(rq, "content_type", content_type)
            + enum_index(rq, "category", category.value)
            + avro_string(legal_basis)
            + enum_index(rq, "requested_action", requested)
            for content_type in CONTENT_TYPES
            for category in CATEGORIES
            for legal_basis in LEGAL_BASES
            for requested in REQUESTED_ACTIONS
        ]
        self._action = [enum_index(ac, "action", t.value) for t in ACTION_TYPES]
        self._saved: dict[tuple[int, int], bytes] = {}
        self._dup_requests = _rows_of(plan.requests_topic, DUPLICATE)
        self._dup_actions = _rows_of(plan.actions_topic, DUPLICATE)
        # The requests topic's rows: ISSUED (one per request), then WITHDRAWN.
        self._event_request = np.concatenate(
            [np.arange(plan.requests, dtype=np.int64), plan.wd_request]
        )
        self._event_time = plan.request_event_times()

    def requests(self, messages: Messages, start: int, stop: int) -> list[tuple[bytes, bytes]]:
        """(key, value) of the requests topic's messages start..stop-1, in order."""
        p = self.plan
        row = messages.row[start:stop]
        withdrawal = row >= p.requests
        req = self._event_request[row]
        authority, platform = p.req_authority[req], p.req_platform[req]
        middle = (withdrawal * len(cal.AUTHORITIES) + authority) * len(cal.PLATFORMS) + platform
        tail = (
            (p.req_content_type[req].astype(np.int64) * len(CATEGORIES) + p.req_category[req])
            * len(LEGAL_BASES)
            + p.req_legal_basis[req]
        ) * len(REQUESTED_ACTIONS) + p.req_requested[req]
        columns = zip(
            messages.kind[start:stop].tolist(),
            row.tolist(),
            withdrawal.tolist(),
            authority.tolist(),
            platform.tolist(),
            middle.tolist(),
            tail.tolist(),
            _digits(np.where(withdrawal, row - p.requests, row), ID_DIGITS),
            _digits(req, ID_DIGITS),
            _digits(p.req_content[req], CONTENT_DIGITS),
            _stamps(p.req_issued[req]),
            _stamps(self._event_time[row]),
            messages.cut[start:stop].tolist(),
            strict=True,
        )
        header, keys, saved, duplicated = (
            self._rq_header,
            self._key,
            self._saved,
            self._dup_requests,
        )
        request_ids, middles, tails = self._request_id, self._middle, self._tail
        rq_id, wd_id = _ID + b"rq-", _ID + b"wd-"
        join = b"".join
        out: list[tuple[bytes, bytes]] = []
        append = out.append
        for i, (kind, r, wd, a, pf, m, tl, number, rd, content, issued, at, cut) in enumerate(
            columns
        ):
            key = keys[pf] + content
            if kind == DUPLICATE:
                append((key, saved.pop((0, r))))
                continue
            if kind == MALFORMED:
                event_id, number = _ID + b"mr-", b"%010d" % (start + i)
            else:
                event_id = wd_id if wd else rq_id
            value = join(
                (
                    header,
                    event_id,
                    number,
                    request_ids[a],
                    rd,
                    middles[m],
                    content,
                    tails[tl],
                    issued,
                    VALUE_BRANCH + at if wd else NULL_BRANCH,
                )
            )
            if kind == MALFORMED:
                value = _truncated(value, cut)
            elif r in duplicated:
                saved[(0, r)] = value
            append((key, value))
        return out

    def actions(self, messages: Messages, start: int, stop: int) -> list[tuple[bytes, bytes]]:
        """(key, value) of the actions topic's messages start..stop-1, in order."""
        p = self.plan
        row = messages.row[start:stop]
        req = p.act_request[row]
        columns = zip(
            messages.kind[start:stop].tolist(),
            row.tolist(),
            p.req_authority[req].tolist(),
            p.req_platform[req].tolist(),
            p.act_type[row].tolist(),
            p.act_names[row].tolist(),
            p.act_scoped[row].tolist(),
            _digits(row, ID_DIGITS),
            _digits(req, ID_DIGITS),
            _digits(p.req_content[req], CONTENT_DIGITS),
            _stamps(p.act_at[row]),
            messages.cut[start:stop].tolist(),
            strict=True,
        )
        header, keys, saved, duplicated = self._ac_header, self._key, self._saved, self._dup_actions
        named, platforms, actions, jurisdictions = (
            self._named,
            self._platform,
            self._action,
            self._jurisdiction,
        )
        ac_id, pa_id = _ID + b"ac-", _ID + b"pa-"
        join = b"".join
        out: list[tuple[bytes, bytes]] = []
        append = out.append
        for i, (kind, r, a, pf, act, names, scoped, number, rd, content, at, cut) in enumerate(
            columns
        ):
            key = keys[pf] + content
            if kind == DUPLICATE:
                append((key, saved.pop((1, r))))
                continue
            value = join(
                (
                    header,
                    _ID + b"ma-" + b"%010d" % (start + i) if kind == MALFORMED else ac_id + number,
                    pa_id,
                    number,
                    named[a] if names else NULL_BRANCH,
                    rd if names else b"",
                    platforms[pf],
                    content,
                    actions[act],
                    jurisdictions[a] if scoped else NULL_BRANCH,
                    at,
                )
            )
            if kind == MALFORMED:
                value = _truncated(value, cut)
            elif r in duplicated:
                saved[(1, r)] = value
            append((key, value))
        return out


def _truncated(value: bytes, cut: float) -> bytes:
    """Keep the single-object header and at least one body byte; lose at least one."""
    return value[: _HEADER + 1 + int(cut * (len(value) - _HEADER - 1))]


def _digits(values: np.ndarray, width: int) -> list[bytes]:
    # Digits hold no NUL byte, so numpy's fixed-width bytes lose nothing.
    digits: list[bytes] = np.frombuffer(fixed_digits(values, width), dtype=f"S{width}").tolist()
    return digits


def _stamps(millis: np.ndarray) -> list[bytes]:
    # The last byte of each varint is non-zero (timestamp_varints' range), so nothing is lost.
    stamps: list[bytes] = np.frombuffer(
        timestamp_varints(millis), dtype=f"S{TIMESTAMP_BYTES}"
    ).tolist()
    return stamps


def _rows_of(messages: Messages, kind: int) -> frozenset[int]:
    return frozenset(messages.row[messages.kind == kind].tolist())


def _check_fields(schema: Any, fields: tuple[str, ...], nullable: tuple[str, ...]) -> None:
    names = tuple(f["name"] for f in schema["fields"])
    if names != fields:
        raise RuntimeError(
            f"{schema['name']} fields are {names}; bench.payloads encodes {fields}: update it"
        )
    for f in schema["fields"]:
        if f["name"] in nullable and not (isinstance(f["type"], list) and f["type"][0] == "null"):
            raise RuntimeError(f"{schema['name']}.{f['name']} is no longer a [null, ...] union")


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def expected_request(plan: Plan, row: int) -> RequestEvent:
    """The requests topic's event `row` (ISSUED rows, then WITHDRAWN rows), the slow way."""
    withdrawal = row >= plan.requests
    req = int(plan.wd_request[row - plan.requests]) if withdrawal else row
    number = row - plan.requests if withdrawal else row
    authority = cal.AUTHORITIES[plan.req_authority[req]]
    return RequestEvent(
        event_id=f"{'wd' if withdrawal else 'rq'}-{number:0{ID_DIGITS}d}",
        request_id=f"{authority.code}-{req:0{ID_DIGITS}d}",
        event_type=RequestEventType.WITHDRAWN if withdrawal else RequestEventType.ISSUED,
        authority=authority.name,
        authority_kind=authority.kind,
        jurisdiction=authority.jurisdiction,
        platform=cal.PLATFORMS[plan.req_platform[req]].name,
        content_id=f"{int(plan.req_content[req]):0{CONTENT_DIGITS}d}",
        content_type=CONTENT_TYPES[plan.req_content_type[req]],
        category=Category(CATEGORIES[plan.req_category[req]]),
        legal_basis=LEGAL_BASES[plan.req_legal_basis[req]],
        requested_action=REQUESTED_ACTIONS[plan.req_requested[req]],
        issued_at=_time(int(plan.req_issued[req])),
        withdrawn_at=_time(int(plan.wd_at[row - plan.requests])) if withdrawal else None,
    )


def expected_action(plan: Plan, row: int) -> ActionEvent:
    """The actions topic's event `row`, the slow way."""
    req = int(plan.act_request[row])
    authority = cal.AUTHORITIES[plan.req_authority[req]]
    return ActionEvent(
        event_id=f"ac-{row:0{ID_DIGITS}d}",
        action_id=f"pa-{row:0{ID_DIGITS}d}",
        request_id=f"{authority.code}-{req:0{ID_DIGITS}d}" if plan.act_names[row] else None,
        platform=cal.PLATFORMS[plan.req_platform[req]].name,
        content_id=f"{int(plan.req_content[req]):0{CONTENT_DIGITS}d}",
        action=ActionType(ACTION_TYPES[plan.act_type[row]]),
        jurisdiction=authority.jurisdiction if plan.act_scoped[row] else None,
        acted_at=_time(int(plan.act_at[row])),
    )

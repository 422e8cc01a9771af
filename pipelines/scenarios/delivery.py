"""Delivery: events as Kafka messages, with arrival times, duplicates and malformed ones.

`Outbox` collects one topic's messages with their arrival times (event time plus a drawn
lag, so some arrive late and out of order) and redelivers a share byte for byte;
`encode_request` writes a share of demands with the older schema v1; `post_malformed`
adds the malformed messages a scenario asks for. Messages come out ordered by arrival.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from connectors.avro_codec import encode_single_object
from connectors.avro_files import RawMessage
from connectors.schema_store import SchemaStore
from pipelines.model import ActionEvent, ActionType, Category, RequestEvent, RequestEventType
from pipelines.scenarios.draws import between, pick
from pipelines.scenarios.events import World
from pipelines.scenarios.params import MALFORMED_KINDS, REQUESTS_TOPIC, Delivery
from pipelines.scenarios.plan import GAP, IdMaker, Plan

REQUESTS_SUBJECT = "removal.requests-value"
ACTIONS_SUBJECT = "removal.actions-value"

# Fields removal.requests-value v1 does not have; a v1 reader defaults them.
_V2_ONLY_FIELDS = ("event_type", "authority_kind", "withdrawn_at")
_YEAR_1970 = (datetime(1970, 1, 1, tzinfo=UTC), datetime(1971, 1, 1, tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class _Outgoing:
    arrival: datetime
    seq: int
    message: RawMessage


class Outbox:
    """Messages of one topic with their arrival times; sorted by arrival when written."""

    def __init__(self, topic: str, delivery: Delivery, rng: random.Random) -> None:
        self.topic = topic
        self.delivery = delivery
        self._rng = rng
        self.items: list[_Outgoing] = []
        self.duplicates = 0

    def post(self, key: str, value: bytes, arrival: datetime, *, may_repeat: bool) -> None:
        self._add(key, value, arrival)
        if may_repeat and self._rng.random() < self.delivery.duplicate_rate:
            # Redelivered byte for byte, later (a producer retry or a consumer replay).
            self._add(key, value, arrival + self.delivery.lag(self._rng))
            self.duplicates += 1

    def _add(self, key: str, value: bytes, arrival: datetime) -> None:
        message = RawMessage(self.topic, key.encode("utf-8"), value, arrival)
        self.items.append(_Outgoing(arrival, len(self.items), message))

    def ordered(self) -> list[RawMessage]:
        return [o.message for o in sorted(self.items, key=lambda o: (o.arrival, o.seq))]


def encode_request(
    event: RequestEvent, store: SchemaStore, rng: random.Random, v1_share: float
) -> bytes:
    record = event.to_avro()
    if event.event_type is RequestEventType.ISSUED and rng.random() < v1_share:
        # An older producer: schema v1 has no event_type, authority_kind or withdrawn_at,
        # so readers see authority_kind OTHER (the RU deadline applies to any authority).
        for name in _V2_ONLY_FIELDS:
            del record[name]
        return encode_single_object(record, REQUESTS_SUBJECT, store, version=1)
    return encode_single_object(record, REQUESTS_SUBJECT, store)


def message_key(platform: str, content_id: str) -> str:
    return f"{platform}/{content_id}"


def _damaged(payload: bytes, kind: str, store: SchemaStore, rng: random.Random) -> bytes:
    """A byte-level fault of a valid single-object payload."""
    if kind == "truncated":
        # Keep the 10-byte header and at least one body byte, lose at least one.
        return payload[: rng.randrange(11, len(payload))]
    if kind == "trailing_bytes":
        return payload + rng.randbytes(rng.randint(1, 8))
    if kind == "unknown_fingerprint":
        while True:
            fingerprint = rng.randbytes(8)
            if store.by_fingerprint(fingerprint) is None:
                return payload[:2] + fingerprint + payload[10:]
    raise ValueError(f"not a byte-level fault: {kind}")


def post_malformed(
    outbox: Outbox,
    counts: Mapping[str, int],
    valid: Sequence[RequestEvent | ActionEvent],
    targets: list[Plan],
    world: World,
    calibration_instant: datetime,
    store: SchemaStore,
    rng: random.Random,
    new_id: IdMaker,
) -> int:
    """Add the malformed messages of one file; return how many.

    Byte-level faults damage a copy (with a fresh event_id) of a random valid event. The
    well-encoded bad events target demands unresolved at the calibration instant, so that
    letting one through would change a published figure.
    """
    s = world.setting
    delivery = outbox.delivery
    subject = REQUESTS_SUBJECT if outbox.topic == REQUESTS_TOPIC else ACTIONS_SUBJECT
    prefix = "rq" if outbox.topic == REQUESTS_TOPIC else "ac"
    posted = 0
    for kind in MALFORMED_KINDS[outbox.topic]:
        for _ in range(counts.get(kind, 0)):
            if kind in ("truncated", "trailing_bytes", "unknown_fingerprint"):
                base = rng.choice(valid)
                copy = replace(base, event_id=new_id(prefix))
                payload = encode_single_object(copy.to_avro(), subject, store)
                arrival = base.event_time + delivery.lag(rng)
                value = _damaged(payload, kind, store, rng)
                outbox.post(
                    message_key(s.platform, base.content_id), value, arrival, may_repeat=False
                )
            elif outbox.topic == REQUESTS_TOPIC:  # timestamp_1970: a new overdue demand
                issued_at = between(rng, *_YEAR_1970)
                event = RequestEvent(
                    event_id=new_id("rq"),
                    request_id=f"RKN-{issued_at.year}-{posted + 1:06d}",
                    event_type=RequestEventType.ISSUED,
                    authority=s.authority,
                    authority_kind=s.authority_kind,
                    jurisdiction=s.jurisdiction,
                    platform=s.platform,
                    content_id=new_id.tweet_id(between(rng, s.start, s.end)),
                    content_type=pick(rng, s.content_types),
                    category=Category.SUICIDE_PROMOTION,
                    legal_basis=s.legal_basis,
                    requested_action=s.requested_action,
                    issued_at=issued_at,
                )
                payload = encode_single_object(event.to_avro(), REQUESTS_SUBJECT, store)
                # A producer with a reset clock: the broker still stamps a real arrival.
                arrival = between(rng, s.start, s.end)
                outbox.post(
                    message_key(s.platform, event.content_id), payload, arrival, may_repeat=False
                )
            else:
                target = targets.pop()
                ids = (new_id("ac"), new_id("tw", 48))
                if kind == "timestamp_1970":  # would take the content down "in 1970"
                    at = between(rng, *_YEAR_1970)
                    action = world.action(
                        target, ids, ActionType.REMOVED, at, names_request=False, jurisdiction=None
                    )
                    arrival = between(rng, s.start, s.end)
                else:  # restricted_without_jurisdiction, naming the demand it would resolve
                    at = between(rng, target.issued_at + GAP, calibration_instant)
                    action = world.action(
                        target,
                        ids,
                        ActionType.RESTRICTED,
                        at,
                        names_request=True,
                        jurisdiction=None,
                    )
                    arrival = at + delivery.lag(rng)
                payload = encode_single_object(action.to_avro(), ACTIONS_SUBJECT, store)
                outbox.post(
                    message_key(s.platform, target.content_id), payload, arrival, may_repeat=False
                )
            posted += 1
    return posted

"""The domain model: closed sets as enums, events and lifecycle records as frozen dataclasses.

Every timestamp is a timezone-aware UTC `datetime`. Events mirror the Avro schemas in
`schemas/` (the schemas are the source of truth; `from_avro` converts a decoded record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pipelines.pickling import compact_pickle


class Category(StrEnum):
    """Why the authority says the content is unlawful (see README for the DSA mapping)."""

    SUICIDE_PROMOTION = "SUICIDE_PROMOTION"
    CHILD_SEXUAL_ABUSE_MATERIAL = "CHILD_SEXUAL_ABUSE_MATERIAL"
    DRUGS = "DRUGS"
    TERRORISM = "TERRORISM"
    EXTREMISM = "EXTREMISM"
    UNAUTHORISED_PROTEST = "UNAUTHORISED_PROTEST"
    HATE_SPEECH = "HATE_SPEECH"
    FRAUD = "FRAUD"
    PRIVACY = "PRIVACY"
    INTELLECTUAL_PROPERTY = "INTELLECTUAL_PROPERTY"
    OTHER = "OTHER"


class AuthorityKind(StrEnum):
    REGULATOR = "REGULATOR"
    GOVERNMENT = "GOVERNMENT"
    COURT = "COURT"
    LAW_ENFORCEMENT = "LAW_ENFORCEMENT"
    TRUSTED_FLAGGER = "TRUSTED_FLAGGER"
    OTHER = "OTHER"


class RequestEventType(StrEnum):
    ISSUED = "ISSUED"
    WITHDRAWN = "WITHDRAWN"


class ActionType(StrEnum):
    REMOVED = "REMOVED"
    RESTRICTED = "RESTRICTED"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    DECLINED = "DECLINED"
    CONTENT_NOT_FOUND = "CONTENT_NOT_FOUND"
    REINSTATED = "REINSTATED"


# Actions that take the content down everywhere, so they cover every request on it.
TAKEDOWN_ACTIONS = frozenset(
    {ActionType.REMOVED, ActionType.ACCOUNT_SUSPENDED, ActionType.CONTENT_NOT_FOUND}
)


class Transition(StrEnum):
    """A change in a request's disposition, emitted by the lifecycle function."""

    OPENED = "OPENED"
    RESOLVED = "RESOLVED"
    RESOLVED_LATE = "RESOLVED_LATE"
    BREACHED = "BREACHED"
    DECLINED = "DECLINED"
    WITHDRAWN = "WITHDRAWN"
    REOPENED = "REOPENED"


class Disposition(StrEnum):
    """What a request is after a transition; OPEN becomes OVERDUE once the deadline passes."""

    OPEN = "OPEN"
    RESOLVED_ON_TIME = "RESOLVED_ON_TIME"
    RESOLVED_LATE = "RESOLVED_LATE"
    DECLINED = "DECLINED"
    WITHDRAWN = "WITHDRAWN"


class Status(StrEnum):
    """Status of a request as of a point in time (DESIGN.md, Semantics)."""

    OPEN = "OPEN"
    OVERDUE = "OVERDUE"
    RESOLVED_ON_TIME = "RESOLVED_ON_TIME"
    RESOLVED_LATE = "RESOLVED_LATE"
    DECLINED = "DECLINED"
    WITHDRAWN = "WITHDRAWN"


E = TypeVar("E", bound=StrEnum)


def _member(members: Mapping[Any, E], kind: type[E], value: Any) -> E:
    """kind(value), through a prebuilt table (Enum's own call costs ten dict lookups)."""
    try:
        return members[value]
    except (KeyError, TypeError):
        return kind(value)  # the member after all, or Enum's ValueError for a bad value


# Value -> member, for `from_avro` (see `_member`).
_CATEGORIES = {m.value: m for m in Category}
_AUTHORITY_KINDS = {m.value: m for m in AuthorityKind}
_REQUEST_EVENT_TYPES = {m.value: m for m in RequestEventType}
_ACTION_TYPES = {m.value: m for m in ActionType}

# "Unresolved" in the regulator's sense.
UNRESOLVED = frozenset({Status.OPEN, Status.OVERDUE, Status.DECLINED})

# Event times as integers (Beam timestamps, Kafka, grouping keys) count from here.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly (no float)."""
    return (t - EPOCH) // timedelta(microseconds=1)


# The smallest step of event time (Avro timestamp-millis): a deadline has passed at
# deadline + TICK, so an action exactly at the deadline is on time.
TICK = timedelta(milliseconds=1)


@compact_pickle
@dataclass(frozen=True, slots=True)
class RequestEvent:
    """A demand issued or withdrawn. Example:
    RequestEvent(event_id="rq-1", request_id="RKN-1", event_type=ISSUED,
    authority="Roskomnadzor", authority_kind=REGULATOR, jurisdiction="RU",
    platform="twitter", content_id="1361", content_type="POST",
    category=SUICIDE_PROMOTION, legal_basis="149-FZ art. 15.1", requested_action="REMOVE",
    issued_at=2021-02-01T10:00Z, withdrawn_at=None)
    """

    event_id: str
    request_id: str
    event_type: RequestEventType
    authority: str
    authority_kind: AuthorityKind
    jurisdiction: str
    platform: str
    content_id: str
    content_type: str
    category: Category
    legal_basis: str
    requested_action: str
    issued_at: datetime
    withdrawn_at: datetime | None = None

    @property
    def event_time(self) -> datetime:
        if self.event_type is RequestEventType.WITHDRAWN and self.withdrawn_at is not None:
            return self.withdrawn_at
        return self.issued_at

    @property
    def content_key(self) -> tuple[str, str]:
        return (self.platform, self.content_id)

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> RequestEvent:
        return cls(
            event_id=record["event_id"],
            request_id=record["request_id"],
            event_type=_member(_REQUEST_EVENT_TYPES, RequestEventType, record["event_type"]),
            authority=record["authority"],
            authority_kind=_member(_AUTHORITY_KINDS, AuthorityKind, record["authority_kind"]),
            jurisdiction=record["jurisdiction"],
            platform=record["platform"],
            content_id=record["content_id"],
            content_type=record["content_type"],
            category=_member(_CATEGORIES, Category, record["category"]),
            legal_basis=record["legal_basis"],
            requested_action=record["requested_action"],
            issued_at=record["issued_at"],
            withdrawn_at=record["withdrawn_at"],
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "request_id": self.request_id,
            "event_type": self.event_type.value,
            "authority": self.authority,
            "authority_kind": self.authority_kind.value,
            "jurisdiction": self.jurisdiction,
            "platform": self.platform,
            "content_id": self.content_id,
            "content_type": self.content_type,
            "category": self.category.value,
            "legal_basis": self.legal_basis,
            "requested_action": self.requested_action,
            "issued_at": self.issued_at,
            "withdrawn_at": self.withdrawn_at,
        }


@compact_pickle
@dataclass(frozen=True, slots=True)
class ActionEvent:
    """What a platform did. Example:
    ActionEvent(event_id="ac-1", action_id="tw-9", request_id=None, platform="twitter",
    content_id="1361", action=RESTRICTED, jurisdiction="RU", acted_at=2021-02-01T18:00Z)
    """

    event_id: str
    action_id: str
    request_id: str | None
    platform: str
    content_id: str
    action: ActionType
    jurisdiction: str | None
    acted_at: datetime

    @property
    def event_time(self) -> datetime:
        return self.acted_at

    @property
    def content_key(self) -> tuple[str, str]:
        return (self.platform, self.content_id)

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> ActionEvent:
        return cls(
            event_id=record["event_id"],
            action_id=record["action_id"],
            request_id=record["request_id"],
            platform=record["platform"],
            content_id=record["content_id"],
            action=_member(_ACTION_TYPES, ActionType, record["action"]),
            jurisdiction=record["jurisdiction"],
            acted_at=record["acted_at"],
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action_id": self.action_id,
            "request_id": self.request_id,
            "platform": self.platform,
            "content_id": self.content_id,
            "action": self.action.value,
            "jurisdiction": self.jurisdiction,
            "acted_at": self.acted_at,
        }


@compact_pickle
@dataclass(frozen=True, slots=True)
class Deadline:
    """The legal deadline of one request and the policy rule it came from."""

    due_at: datetime
    rule_id: str
    sla: timedelta
    law: str
    default_used: bool


@compact_pickle
@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One change in one request's lifecycle; `seq` orders a request's transitions.

    Example: TransitionRecord(request_id="RKN-1", seq=1, transition=RESOLVED,
    at=2021-02-01T18:00Z, disposition=RESOLVED_ON_TIME, cause_event_id="ac-1")
    """

    request_id: str
    seq: int
    transition: Transition
    at: datetime
    disposition: Disposition
    cause_event_id: str | None

    @property
    def transition_id(self) -> str:
        return f"{self.request_id}#{self.seq}"


@compact_pickle
@dataclass(frozen=True, slots=True)
class RequestLifecycle:
    """A request, its deadline and its whole history, as the lifecycle function sees it."""

    request: RequestEvent
    deadline: Deadline
    transitions: tuple[TransitionRecord, ...]

    def status_as_of(self, as_of: datetime) -> Status | None:
        """Status at `as_of` from the transitions (None when not yet issued)."""
        current: Disposition | None = None
        for t in self.transitions:
            if t.at > as_of:
                break
            current = t.disposition
        if current is None:
            return None
        if current is Disposition.OPEN:
            return Status.OVERDUE if as_of > self.deadline.due_at else Status.OPEN
        return Status(current.value)

    @property
    def first_resolved_at(self) -> datetime | None:
        for t in self.transitions:
            if t.transition in (Transition.RESOLVED, Transition.RESOLVED_LATE):
                return t.at
        return None

    @property
    def breached(self) -> bool:
        return any(t.transition is Transition.BREACHED for t in self.transitions)

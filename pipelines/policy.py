"""The SLA policy table: legal deadlines keyed by jurisdiction, authority and category.

The table lives in `pipelines/data/sla_policy.toml` (its header explains the matching
rules). `SlaPolicy.deadline_for(request)` returns the request's `Deadline`; a request no
rule covers gets the configured default and `default_used=True`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.model import Deadline, RequestEvent

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent / "data" / "sla_policy.toml"
DEFAULT_RULE_ID = "DEFAULT"


@dataclass(frozen=True, slots=True)
class SlaRule:
    """One row of the policy table. Example: SlaRule(id="RU-149FZ-15.1", jurisdiction="RU",
    authority="*", categories=("*",), sla=24 h, effective_from=2012-11-01, effective_to=None,
    law="Russia, Federal Law 149-FZ ...", note="")"""

    id: str
    jurisdiction: str
    authority: str
    categories: tuple[str, ...]
    sla: timedelta
    effective_from: datetime
    effective_to: datetime | None
    law: str
    note: str

    def specificity(self, groups: Mapping[str, frozenset[str]]) -> int:
        return (
            (self.authority != "*") * 4
            + (self.categories != ("*",)) * 2
            + (self.jurisdiction not in groups) * 1
        )


@dataclass(frozen=True)
class SlaPolicy:
    version: str
    rules: tuple[SlaRule, ...]
    groups: Mapping[str, frozenset[str]]
    default_sla: timedelta
    # (jurisdiction, authority, authority kind, category) -> the rules that match it on
    # any date, strictest first: `deadline_for` then only checks effective dates.
    _candidates: dict[tuple[str, str, str, str], tuple[SlaRule, ...]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def load(
        cls, path: Path | None = None, *, default_sla: timedelta = timedelta(hours=24)
    ) -> SlaPolicy:
        raw = tomllib.loads((path or DEFAULT_POLICY_FILE).read_text(encoding="utf-8"))
        groups = {name: frozenset(members) for name, members in raw.get("groups", {}).items()}
        rules = tuple(_parse_rule(r) for r in raw.get("rule", []))
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids) or DEFAULT_RULE_ID in ids:
            raise ValueError(f"SLA policy rule ids must be unique and not {DEFAULT_RULE_ID!r}")
        return cls(version=str(raw["version"]), rules=rules, groups=groups, default_sla=default_sla)

    def _jurisdiction_matches(self, rule: SlaRule, jurisdiction: str) -> bool:
        return rule.jurisdiction == jurisdiction or jurisdiction in self.groups.get(
            rule.jurisdiction, frozenset()
        )

    def matching_rules(self, request: RequestEvent) -> list[SlaRule]:
        """The rules that apply to `request` on its issue date, strictest first."""
        issued = request.issued_at
        return [
            rule
            for rule in self._candidates_for(request)
            if rule.effective_from <= issued
            and (rule.effective_to is None or issued < rule.effective_to)
        ]

    def _candidates_for(self, request: RequestEvent) -> tuple[SlaRule, ...]:
        key = (
            request.jurisdiction,
            request.authority,
            request.authority_kind.value,
            request.category.value,
        )
        found = self._candidates.get(key)
        if found is None:
            found = tuple(
                sorted(
                    (
                        rule
                        for rule in self.rules
                        if self._jurisdiction_matches(rule, request.jurisdiction)
                        and rule.authority
                        in ("*", request.authority, f"kind:{request.authority_kind}")
                        and ("*" in rule.categories or request.category.value in rule.categories)
                    ),
                    key=lambda r: (r.sla, -r.specificity(self.groups), r.id),
                )
            )
            self._candidates[key] = found
        return found

    def deadline_for(self, request: RequestEvent) -> Deadline:
        """The strictest applicable rule's deadline, or the flagged default."""
        rules = self.matching_rules(request)
        if not rules:
            return Deadline(
                due_at=request.issued_at + self.default_sla,
                rule_id=DEFAULT_RULE_ID,
                sla=self.default_sla,
                law="no rule in the SLA policy table covers this request",
                default_used=True,
            )
        rule = rules[0]  # strictest: (sla, most specific, id), as the candidates are sorted
        return Deadline(
            due_at=request.issued_at + rule.sla,
            rule_id=rule.id,
            sla=rule.sla,
            law=rule.law,
            default_used=False,
        )

    def rows(self) -> Sequence[dict[str, Any]]:
        """The table as rows, for landing next to the data it was applied to."""
        return [
            {
                "policy_version": self.version,
                "rule_id": r.id,
                "jurisdiction": r.jurisdiction,
                "authority": r.authority,
                "categories": ",".join(r.categories),
                "sla_seconds": int(r.sla.total_seconds()),
                "effective_from": r.effective_from,
                "effective_to": r.effective_to,
                "law": r.law,
                "note": r.note,
            }
            for r in self.rules
        ]


def _parse_rule(raw: Mapping[str, Any]) -> SlaRule:
    if ("sla_hours" in raw) == ("sla_minutes" in raw):
        raise ValueError(f"rule {raw.get('id')!r}: give exactly one of sla_hours, sla_minutes")
    sla = (
        timedelta(hours=raw["sla_hours"])
        if "sla_hours" in raw
        else timedelta(minutes=raw["sla_minutes"])
    )
    for field in ("effective_from", "effective_to"):
        value = raw.get(field)
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValueError(f"rule {raw['id']!r}: {field} must be an offset date-time (UTC)")
    return SlaRule(
        id=raw["id"],
        jurisdiction=raw["jurisdiction"],
        authority=raw["authority"],
        categories=tuple(raw["categories"]),
        sla=sla,
        effective_from=raw["effective_from"],
        effective_to=raw.get("effective_to"),
        law=raw["law"],
        note=raw.get("note", ""),
    )

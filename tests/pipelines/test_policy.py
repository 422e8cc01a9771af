"""The SLA policy table: the deadlines the issue and SOURCES.md name, and the default."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.model import AuthorityKind, Category
from pipelines.policy import DEFAULT_RULE_ID, SlaPolicy
from tests.conftest import request

POLICY = SlaPolicy.load(default_sla=timedelta(hours=72))


def _deadline(
    jurisdiction: str,
    category: Category = Category.OTHER,
    *,
    issued: datetime = datetime(2024, 6, 1, tzinfo=UTC),
    kind: AuthorityKind = AuthorityKind.REGULATOR,
) -> tuple[str, timedelta, bool]:
    r = dataclasses.replace(
        request(1, jurisdiction=jurisdiction, category=category),
        issued_at=issued,
        authority_kind=kind,
    )
    d = POLICY.deadline_for(r)
    assert d.due_at == issued + d.sla
    return d.rule_id, d.sla, d.default_used


def test_russia_24_hours() -> None:
    assert _deadline("RU", Category.SUICIDE_PROMOTION, issued=datetime(2021, 2, 1, tzinfo=UTC)) == (
        "RU-149FZ-15.1",
        timedelta(hours=24),
        False,
    )


def test_eu_terrorist_content_one_hour_from_june_2022() -> None:
    assert _deadline("FR", Category.TERRORISM) == (
        "EU-TCO-2021-784-art3",
        timedelta(hours=1),
        False,
    )
    # Germany: the strictest applicable deadline binds (TCO 1 h over NetzDG 24 h).
    assert _deadline("DE", Category.TERRORISM)[1] == timedelta(hours=1)
    # Before the Regulation applied, NetzDG's 24 h for manifestly unlawful content.
    assert _deadline("DE", Category.TERRORISM, issued=datetime(2021, 1, 1, tzinfo=UTC))[:2] == (
        "DE-NetzDG-3-2-2",
        timedelta(hours=24),
    )
    # France before June 2022: no rule, so the flagged default.
    assert _deadline("FR", Category.TERRORISM, issued=datetime(2021, 1, 1, tzinfo=UTC)) == (
        DEFAULT_RULE_ID,
        timedelta(hours=72),
        True,
    )


def test_germany_netzdg_seven_days_otherwise() -> None:
    assert _deadline("DE", Category.HATE_SPEECH) == ("DE-NetzDG-3-2-3", timedelta(days=7), False)
    assert _deadline("DE", Category.CHILD_SEXUAL_ABUSE_MATERIAL)[:2] == (
        "DE-NetzDG-3-2-2",
        timedelta(hours=24),
    )


def test_india_36_hours_then_3_for_government_notices() -> None:
    before = datetime(2026, 2, 19, 23, tzinfo=UTC)
    after = datetime(2026, 2, 20, tzinfo=UTC)
    assert _deadline("IN", kind=AuthorityKind.GOVERNMENT, issued=before)[1] == timedelta(hours=36)
    assert _deadline("IN", kind=AuthorityKind.GOVERNMENT, issued=after) == (
        "IN-ITR-3-1-d-GSR120E",
        timedelta(hours=3),
        False,
    )
    assert _deadline("IN", kind=AuthorityKind.COURT, issued=after)[1] == timedelta(hours=36)


def test_australia_24_hours() -> None:
    assert _deadline("AU") == ("AU-OSA-s88", timedelta(hours=24), False)


def test_unknown_jurisdiction_gets_the_flagged_default() -> None:
    assert _deadline("ZZ") == (DEFAULT_RULE_ID, timedelta(hours=72), True)


def test_every_rule_cites_a_law_and_rows_carry_the_version() -> None:
    assert all(rule.law for rule in POLICY.rules)
    assert {row["policy_version"] for row in POLICY.rows()} == {POLICY.version}


def test_malformed_policy_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text(
        'version = "x"\n[[rule]]\nid = "A"\njurisdiction = "RU"\nauthority = "*"\n'
        'categories = ["*"]\nsla_hours = 1\nsla_minutes = 5\n'
        'effective_from = 2020-01-01T00:00:00Z\nlaw = "l"\n'
    )
    with pytest.raises(ValueError, match="exactly one"):
        SlaPolicy.load(bad)

"""Alert rules: what the monitoring evaluates on the daily backlog, read from a TOML file.

The packaged rules are `pipelines/data/alert_rules.toml` (its header explains each field);
a site replaces them with `REMOVAL_AUDIT_ALERT_RULES=path`. A rules file with an unknown
kind, label or key, or a threshold out of range, is refused at load with the rule named:
a typo must not silently disable an alert.

Example:
    rules = AlertRules.load()
    rules.rules[0].name == "BacklogSpike"; rules.rules[0].by == ("category", "platform",
    "authority")
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "data" / "alert_rules.toml"
LABELS = ("category", "platform", "authority")  # the backlog's labels, finest grain
SEVERITIES = ("critical", "warning", "info")


class AlertRulesError(ValueError):
    """The rules file cannot be used as it is."""


class RuleKind(StrEnum):
    BACKLOG_SPIKE = "backlog_spike"
    OVERDUE = "overdue"
    BREACH_RATE = "breach_rate"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule. Kind-specific thresholds are 0 when the kind does not use them."""

    name: str
    kind: RuleKind
    severity: str
    by: tuple[str, ...]
    summary: str
    runbook: str
    for_days: int = 1
    keep_firing_for_days: int = 1
    # backlog_spike and breach_rate
    window_days: int = 7
    # backlog_spike
    min_growth: int = 0
    min_relative_growth: float = 0.0
    k_sigma: float = 0.0  # 0: no z-score branch
    baseline_days: int = 56
    min_baseline_days: int = 28
    sigma_floor: float = 1.0
    min_sigma_growth: int = 0
    # overdue (a count) and breach_rate (a share)
    threshold: float = 0.0
    # breach_rate
    min_due: int = 1

    @property
    def lookback_days(self) -> int:
        """Days of history before an evaluated day that its signal reads."""
        if self.kind is RuleKind.BACKLOG_SPIKE:
            return self.window_days + self.baseline_days + self.window_days
        if self.kind is RuleKind.BREACH_RATE:
            return self.window_days
        return 0

    def digest(self) -> str:
        """Identifies the rule's definition: an evaluation checkpoint belongs to it."""
        described = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(described.encode()).hexdigest()[:16]


_KIND_KEYS: Mapping[RuleKind, frozenset[str]] = {
    RuleKind.BACKLOG_SPIKE: frozenset(
        {
            *("window_days", "min_growth", "min_relative_growth", "k_sigma"),
            *("baseline_days", "min_baseline_days", "sigma_floor", "min_sigma_growth"),
        }
    ),
    RuleKind.OVERDUE: frozenset({"threshold"}),
    RuleKind.BREACH_RATE: frozenset({"window_days", "threshold", "min_due"}),
}
_COMMON_KEYS = frozenset(
    {"name", "kind", "severity", "by", "summary", "runbook", "for_days", "keep_firing_for_days"}
)


@dataclass(frozen=True)
class AlertRules:
    version: str
    rules: tuple[AlertRule, ...]
    source: str

    @classmethod
    def load(cls, path: Path | None = None) -> AlertRules:
        """Read and check a rules file (default: the packaged one)."""
        where = path or DEFAULT_RULES_FILE
        try:
            raw = tomllib.loads(where.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise AlertRulesError(f"alert rules {where}: {error}") from error
        unknown = set(raw) - {"version", "rule"}
        if unknown:
            raise AlertRulesError(f"alert rules {where}: unknown keys {sorted(unknown)}")
        rules = tuple(_parse_rule(r, where) for r in raw.get("rule", []))
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise AlertRulesError(f"alert rules {where}: rule names repeat: {names}")
        return cls(str(raw.get("version", "unversioned")), rules, str(where))


def _parse_rule(raw: Mapping[str, Any], where: Path) -> AlertRule:
    name = str(raw.get("name", "?"))

    def refuse(why: str) -> AlertRulesError:
        return AlertRulesError(f"alert rules {where}, rule {name}: {why}")

    try:
        kind = RuleKind(str(raw.get("kind")))
    except ValueError:
        raise refuse(f"kind must be one of {[k.value for k in RuleKind]}") from None
    unknown = set(raw) - _COMMON_KEYS - _KIND_KEYS[kind]
    if unknown:
        raise refuse(f"keys {sorted(unknown)} are not used by a {kind} rule")
    missing = {"name", "severity", "by", "summary", "runbook"} - set(raw)
    if missing:
        raise refuse(f"missing {sorted(missing)}")
    by = tuple(raw["by"])
    if not by or set(by) - set(LABELS) or len(set(by)) != len(by):
        raise refuse(f"by must name distinct labels among {LABELS}, got {list(by)}")
    if raw["severity"] not in SEVERITIES:
        raise refuse(f"severity must be one of {SEVERITIES}")
    types = {f.name: f.type for f in fields(AlertRule)}
    values: dict[str, Any] = {"name": name, "kind": kind, "by": by}
    for key, value in raw.items():
        if key in values:
            continue
        if types[key] == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            raise refuse(f"{key} must be an integer, got {value!r}")
        if types[key] == "float" and not isinstance(value, int | float):
            raise refuse(f"{key} must be a number, got {value!r}")
        if types[key] == "str" and not isinstance(value, str):
            raise refuse(f"{key} must be a string")
        values[key] = float(value) if types[key] == "float" else value
    rule = AlertRule(**values)
    _check_ranges(rule, refuse)
    return rule


def _check_ranges(rule: AlertRule, refuse: Any) -> None:
    if rule.for_days < 1 or rule.keep_firing_for_days < 1:
        raise refuse("for_days and keep_firing_for_days must be >= 1")
    if rule.window_days < 1:
        raise refuse("window_days must be >= 1")
    if rule.kind is RuleKind.BACKLOG_SPIKE:
        if rule.min_growth < 1 and rule.k_sigma <= 0:
            raise refuse("needs min_growth >= 1 or k_sigma > 0")
        if rule.k_sigma > 0 and not (1 <= rule.min_baseline_days <= rule.baseline_days):
            raise refuse("needs 1 <= min_baseline_days <= baseline_days")
        if rule.sigma_floor <= 0 or rule.min_relative_growth < 0:
            raise refuse("sigma_floor must be > 0 and min_relative_growth >= 0")
    if rule.kind is RuleKind.OVERDUE and rule.threshold < 1:
        raise refuse("threshold must be >= 1 (a count of requests)")
    if rule.kind is RuleKind.BREACH_RATE and not (0 < rule.threshold <= 1 and rule.min_due >= 1):
        raise refuse("threshold must be a share in (0, 1] and min_due >= 1")

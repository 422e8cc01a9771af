"""The workload's events and deliveries as numpy columns, drawn from `bench.calibration`.

`plan(events, seed, policy)` returns a `Plan`: requests (one row each), withdrawals, actions (the
answers and reinstatements) and, per topic, the messages in arrival order. Nothing is
encoded here; `bench.workload` turns rows into payloads.

Exactly `events` valid events: every attribute is drawn for `events` candidate requests
(each has at least one event), then the requests are cut where the running count of their
events (request, answer, reinstatement, withdrawal) reaches `events`; the last request may
lose its later follow-ups. Requests are then issued at sorted uniform times over
`events / MEAN_RATE_PER_S` seconds from `START`; answers, withdrawals and reinstatements
follow after their delays, so a late tail runs past that span.

Deterministic: one `numpy.random.Generator(PCG64(seed))` draws everything in a fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from bench import calibration as cal
from pipelines.model import ActionType, Category, RequestEvent, RequestEventType
from pipelines.policy import SlaPolicy

CATEGORIES: tuple[Category, ...] = tuple(Category)
CONTENT_TYPES: tuple[str, ...] = ("POST", "IMAGE", "VIDEO", "ACCOUNT", "URL", "OTHER")
REQUESTED_ACTIONS: tuple[str, ...] = tuple(cal.REQUESTED_ACTION_MIX)
ACTION_TYPES: tuple[ActionType, ...] = tuple(ActionType)
# Legal bases: each authority's own, then the terrorist-content regulation.
LEGAL_BASES: tuple[str, ...] = tuple(
    dict.fromkeys([a.legal_basis for a in cal.AUTHORITIES] + [cal.TCO_LEGAL_BASIS])
)

# Message kinds, in the order they sort on equal arrival.
VALID, DUPLICATE, MALFORMED = 0, 1, 2

_MS = 1000
_CONTENT_ID_BASE = 10**14  # content ids are 15-digit numbers
_CONTENT_MULTIPLIER = 0x5DEECE66D  # odd: a bijection modulo 2**48


@dataclass(frozen=True)
class Messages:
    """One topic's messages in arrival order: `kind` (VALID, DUPLICATE, MALFORMED), `row`
    (the event's row in its table), `arrival` (epoch ms) and, for malformed ones, `cut`
    (the share of the body kept, in [0, 1))."""

    kind: np.ndarray
    row: np.ndarray
    arrival: np.ndarray
    cut: np.ndarray


@dataclass(frozen=True)
class Plan:
    """Requests (rows 0..R-1), withdrawals (rows R.. of the requests topic) and actions.

    Request columns index the tables of this module and of `calibration`; times are epoch
    milliseconds; `content` is the 15-digit content id. Withdrawal `wd_request` and action
    `act_request` give the request row; `act_names` whether the action carries its
    request_id, `act_scoped` whether it carries the request's jurisdiction.
    """

    req_authority: np.ndarray
    req_platform: np.ndarray
    req_category: np.ndarray
    req_content_type: np.ndarray
    req_legal_basis: np.ndarray
    req_requested: np.ndarray
    req_content: np.ndarray
    req_issued: np.ndarray
    wd_request: np.ndarray
    wd_at: np.ndarray
    act_request: np.ndarray
    act_type: np.ndarray
    act_names: np.ndarray
    act_scoped: np.ndarray
    act_at: np.ndarray
    requests_topic: Messages
    actions_topic: Messages

    @property
    def requests(self) -> int:
        return len(self.req_issued)

    def request_event_times(self) -> np.ndarray:
        """Event times of the requests topic's rows (ISSUED rows, then WITHDRAWN rows)."""
        return np.concatenate([self.req_issued, self.wd_at])


def sla_seconds(policy: SlaPolicy) -> np.ndarray:
    """SLA in seconds by (authority, category) at `START`, from the real policy table."""
    table = np.zeros((len(cal.AUTHORITIES), len(CATEGORIES)), dtype=np.int64)
    for a, authority in enumerate(cal.AUTHORITIES):
        for c, category in enumerate(CATEGORIES):
            probe = RequestEvent(
                event_id="probe",
                request_id="probe",
                event_type=RequestEventType.ISSUED,
                authority=authority.name,
                authority_kind=authority.kind,
                jurisdiction=authority.jurisdiction,
                platform="probe",
                content_id="probe",
                content_type="POST",
                category=category,
                legal_basis=authority.legal_basis,
                requested_action="REMOVE",
                issued_at=cal.START,
            )
            table[a, c] = policy.deadline_for(probe).sla // timedelta(seconds=1)
    return table


def plan(events: int, seed: int, policy: SlaPolicy) -> Plan:
    """Draw a workload of exactly `events` valid events (see the module docstring)."""
    if events < 1:
        raise ValueError("events must be at least 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    n = events  # candidate requests: always enough, as each has at least one event

    authority = _choice(rng, n, [a.weight for a in cal.AUTHORITIES])
    platform = _choice(rng, n, [p.weight for p in cal.PLATFORMS])
    social = np.array([p.kind == cal.SOCIAL for p in cal.PLATFORMS])[platform]
    category = np.where(
        social,
        _choice(rng, n, _over(cal.CATEGORY_MIX[cal.SOCIAL], CATEGORIES)),
        _choice(rng, n, _over(cal.CATEGORY_MIX[cal.MARKETPLACE], CATEGORIES)),
    )
    content_type = np.where(
        social,
        _choice(rng, n, _over(cal.CONTENT_TYPE_MIX[cal.SOCIAL], CONTENT_TYPES)),
        _choice(rng, n, _over(cal.CONTENT_TYPE_MIX[cal.MARKETPLACE], CONTENT_TYPES)),
    )
    # Repeat demands share their content's platform, category and content type.
    root = _repeat_roots(rng, n)
    platform, category, content_type = platform[root], category[root], content_type[root]
    requested = _choice(rng, n, list(cal.REQUESTED_ACTION_MIX.values()))

    outcome = _choice(rng, n, list(cal.OUTCOME_SHARES))
    act_type = np.full(n, ACTION_TYPES.index(ActionType.DECLINED), dtype=np.int8)
    for r, name in enumerate(REQUESTED_ACTIONS):
        mix = cal.ACTION_MIX[name]
        drawn = _choice(rng, n, _over(mix, ACTION_TYPES))
        chosen = (requested == r) & (outcome != cal.OUTCOME_DECLINED)
        act_type[chosen] = drawn[chosen]
    acted = outcome != cal.OUTCOME_NEVER
    reinstatable = np.isin(
        act_type,
        [
            ACTION_TYPES.index(t)
            for t in (ActionType.REMOVED, ActionType.RESTRICTED, ActionType.ACCOUNT_SUSPENDED)
        ],
    )
    reinstated = acted & reinstatable & (rng.random(n) < cal.REINSTATED_SHARE)
    withdrawn = rng.random(n) < cal.WITHDRAWN_SHARE

    # Cut to exactly `events` events; the boundary request keeps its first follow-ups
    # (answer, then reinstatement, then withdrawal).
    per_request = 1 + acted.astype(np.int64) + reinstated + withdrawn
    total = np.cumsum(per_request)
    full = int(np.searchsorted(total, events, side="right"))
    left = events - (int(total[full - 1]) if full else 0)
    count = full + (1 if left else 0)
    if left:
        budget = left - 1
        for follow_up in (acted, reinstated, withdrawn):
            if follow_up[full]:
                if budget:
                    budget -= 1
                else:
                    follow_up[full] = False
    cut = slice(0, count)
    authority, platform, category = authority[cut], platform[cut], category[cut]
    content_type, requested, root = content_type[cut], requested[cut], root[cut]
    outcome, act_type, acted = outcome[cut], act_type[cut], acted[cut]
    reinstated, withdrawn = reinstated[cut], withdrawn[cut]

    span_ms = events / cal.MEAN_RATE_PER_S * _MS
    start_ms = int(cal.START.timestamp() * _MS)
    issued = start_ms + np.floor(np.sort(rng.random(count)) * span_ms).astype(np.int64)

    sla_ms = sla_seconds(policy)[authority, category] * _MS
    delay = np.where(
        outcome == cal.OUTCOME_FAST,
        _lognormal_ms(rng, count, cal.FAST_DELAY),
        _lognormal_ms(rng, count, cal.REVIEW_DELAY),
    )
    low, high = (math.log(f) for f in cal.LATE_FACTOR)
    late = sla_ms * np.exp(rng.uniform(low, high, count))
    delay = np.where(outcome == cal.OUTCOME_LATE, late.astype(np.int64), delay)
    answered_at = issued + np.maximum(delay, 1)
    names = rng.random(count) < cal.NAMES_REQUEST_SHARE

    answers = np.flatnonzero(acted)
    again = np.flatnonzero(reinstated)
    wd_request = np.flatnonzero(withdrawn)
    reinstated_at = answered_at[again] + np.maximum(
        _lognormal_ms(rng, len(again), cal.REINSTATE_DELAY), 1
    )
    wd_at = issued[wd_request] + np.maximum(
        _lognormal_ms(rng, len(wd_request), cal.WITHDRAW_DELAY), 1
    )

    restricted = ACTION_TYPES.index(ActionType.RESTRICTED)
    declined = ACTION_TYPES.index(ActionType.DECLINED)
    reinstated_type = ACTION_TYPES.index(ActionType.REINSTATED)
    act_request = np.concatenate([answers, again])
    act_kind = np.concatenate(
        [act_type[answers], np.full(len(again), reinstated_type, dtype=np.int8)]
    )
    act_names = np.concatenate([names[answers], np.zeros(len(again), dtype=bool)])
    # A restriction applies in the requesting jurisdiction; a refusal that names no request
    # refuses that jurisdiction's demand; a reinstatement undoes the answer where it applied.
    act_scoped = np.concatenate(
        [
            (act_type[answers] == restricted) | ((act_type[answers] == declined) & ~names[answers]),
            act_type[again] == restricted,
        ]
    )
    act_at = np.concatenate([answered_at[answers], reinstated_at])
    order = np.argsort(act_at, kind="stable")  # action numbers follow event time
    act_at = act_at[order]

    requests_topic, actions_topic = _deliveries(rng, np.concatenate([issued, wd_at]), act_at)
    return Plan(
        req_authority=authority,
        req_platform=platform,
        req_category=category,
        req_content_type=content_type,
        req_legal_basis=_legal_basis(authority, category, policy),
        req_requested=requested,
        req_content=_content_ids(root, seed),
        req_issued=issued,
        wd_request=wd_request,
        wd_at=wd_at,
        act_request=act_request[order],
        act_type=act_kind[order],
        act_names=act_names[order],
        act_scoped=act_scoped[order],
        act_at=act_at,
        requests_topic=requests_topic,
        actions_topic=actions_topic,
    )


def _deliveries(
    rng: np.random.Generator, request_times: np.ndarray, action_times: np.ndarray
) -> tuple[Messages, Messages]:
    """Arrival-ordered messages of both topics: each event once, duplicates, malformed."""
    total = len(request_times) + len(action_times)
    malformed = rng.choice(total, size=max(1, round(total * cal.MALFORMED_SHARE)), replace=False)
    topics = []
    for offset, times in ((0, request_times), (len(request_times), action_times)):
        n = len(times)
        arrival = times + _lognormal_ms(rng, n, cal.ARRIVAL_LAG)
        dup = np.flatnonzero(rng.random(n) < cal.DUPLICATE_SHARE)
        dup_arrival = arrival[dup] + np.maximum(_lognormal_ms(rng, len(dup), cal.DUPLICATE_LAG), 1)
        bad = np.sort(malformed[(malformed >= offset) & (malformed < offset + n)] - offset)
        bad_arrival = times[bad] + _lognormal_ms(rng, len(bad), cal.ARRIVAL_LAG)
        kind = np.concatenate(
            [
                np.full(n, VALID, dtype=np.int8),
                np.full(len(dup), DUPLICATE, dtype=np.int8),
                np.full(len(bad), MALFORMED, dtype=np.int8),
            ]
        )
        row = np.concatenate([np.arange(n, dtype=np.int64), dup, bad])
        arrivals = np.concatenate([arrival, dup_arrival, bad_arrival])
        cut = np.concatenate([np.zeros(n + len(dup)), rng.random(len(bad))])
        order = np.argsort(arrivals, kind="stable")
        topics.append(Messages(kind[order], row[order], arrivals[order], cut[order]))
    return topics[0], topics[1]


def _choice(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=cal.normalised(tuple(weights))).astype(np.int8)


def _over(mix: Mapping[Any, float], symbols: Sequence[object]) -> list[float]:
    """Weights of `mix` laid over `symbols` (absent symbols weigh 0)."""
    return [float(mix.get(s, 0.0)) for s in symbols]


def _lognormal_ms(rng: np.random.Generator, n: int, d: cal.LogNormal) -> np.ndarray:
    return (rng.lognormal(np.log(d.median_s * _MS), d.sigma, n)).astype(np.int64)


def _repeat_roots(rng: np.random.Generator, n: int) -> np.ndarray:
    """For each request, the first request on its content (itself unless a repeat)."""
    index = np.arange(n, dtype=np.int64)
    back = np.exp(rng.uniform(0.0, np.log(cal.REPEAT_MAX_BACK + 1), n)).astype(np.int64)
    repeat = (rng.random(n) < cal.REPEAT_SHARE) & (back >= 1) & (back <= index)
    root = np.where(repeat, index - back, index)
    while True:  # pointer jumping: repeats of repeats end at the first request
        jumped = root[root]
        if np.array_equal(jumped, root):
            return root
        root = jumped


def _content_ids(root: np.ndarray, seed: int) -> np.ndarray:
    """Distinct 15-digit content ids, one per content (root request), scattered by seed."""
    mask = np.uint64((1 << 48) - 1)
    offset = np.uint64((seed * 0x9E3779B97F4A7C15) & ((1 << 48) - 1))
    mixed = (root.astype(np.uint64) * np.uint64(_CONTENT_MULTIPLIER) + offset) & mask
    return mixed.astype(np.int64) + _CONTENT_ID_BASE


def _legal_basis(authority: np.ndarray, category: np.ndarray, policy: SlaPolicy) -> np.ndarray:
    own = np.array([LEGAL_BASES.index(a.legal_basis) for a in cal.AUTHORITIES])[authority]
    eu = policy.groups.get("EU", frozenset())
    in_eu = np.array([a.jurisdiction in eu for a in cal.AUTHORITIES])[authority]
    terrorism = category == CATEGORIES.index(Category.TERRORISM)
    tco = LEGAL_BASES.index(cal.TCO_LEGAL_BASIS)
    return np.where(in_eu & terrorism, tco, own).astype(np.int8)

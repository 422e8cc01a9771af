-- The audit's final tables in plain DuckDB SQL: "the alternative a user might pick" that the
-- benchmark (issue 6) times against the Beam pipeline. Same rules as pipelines/lifecycle.py
-- (its docstring), computed set-wise: per request, the actions on its content in event-time
-- order, the platform's coverage after each one with running windows, transitions where the
-- disposition changes, status segments from the transitions, backlog deltas per midnight
-- UTC and a running sum. No (request x day) cross join, so it scales with the events.
--
-- Inputs (bench/floor.py lands the first two, one row per delivery, duplicates kept):
--   floor_requests(event_id, request_id, event_type, authority, authority_kind,
--       jurisdiction, platform, content_id, content_type, category, legal_basis,
--       requested_action, issued_at, withdrawn_at, kafka_partition, kafka_offset)
--   floor_actions(event_id, action_id, request_id, platform, content_id, action,
--       jurisdiction, acted_at, kafka_partition, kafka_offset)
--   alt_sla_policy(rule_id, jurisdiction, authority, categories, sla_seconds,
--       effective_from, effective_to)   -- one policy version, as sql/ddl/090_sla_policy.sql
--   alt_sla_groups(group_name, jurisdiction)   -- [groups] of pipelines/data/sla_policy.toml
--   variables alt_default_sla_seconds, alt_oldest_plausible (TIMESTAMPTZ),
--       alt_max_clock_skew_seconds (the pipeline's settings)
-- Outputs (same columns and grain as sql/ddl/030, 040, 050, 060):
--   alt_requests, alt_lifecycle_transitions, alt_sla_breaches, alt_backlog_daily.
-- Working tables are TEMP, named alt_*.

-- The first midnight (UTC) at or after t, as a day number since the epoch: the first daily
-- snapshot that sees t (pipelines/transforms.py _day_at_or_after).
CREATE OR REPLACE TEMP MACRO alt_day_at_or_after(t) AS
    epoch_us(t) // 86400000000 + CASE WHEN epoch_us(t) % 86400000000 > 0 THEN 1 ELSE 0 END;

-- The intake's domain checks that a decoded record can still fail (pipelines/intake.py):
-- required text present, WITHDRAWN with its time, RESTRICTED with its jurisdiction,
-- plausible event times.
-- alt_text: not blank as Python's str.strip() sees it (the regular expression is slow, so
-- a printable first character answers first).
CREATE OR REPLACE TEMP MACRO alt_text(s) AS ascii(s) BETWEEN 33 AND 126 OR regexp_matches(s,
    '[^\t\n\x0B\f\r \x1C-\x1F\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}'
    || '\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]');
CREATE OR REPLACE TEMP MACRO alt_plausible(t) AS
    t IS NULL OR (t >= getvariable('alt_oldest_plausible')
                  AND t <= now() + to_seconds(getvariable('alt_max_clock_skew_seconds')));

-- Grain: one row per distinct request event (event_id): the first valid delivery by source
-- position, as the pipeline's DedupeEvents keeps it (position: Kafka "topic/partition",
-- compared as text, then offset).
CREATE OR REPLACE TEMP TABLE alt_request_events AS
SELECT event_id, request_id, event_type, authority, authority_kind, jurisdiction, platform,
       content_id, content_type, category, legal_basis, requested_action, issued_at,
       withdrawn_at
FROM floor_requests
WHERE alt_text(event_id) AND alt_text(request_id) AND alt_text(authority)
  AND alt_text(jurisdiction) AND alt_text(platform) AND alt_text(content_id)
  AND NOT (event_type = 'WITHDRAWN' AND withdrawn_at IS NULL)
  AND alt_plausible(issued_at) AND alt_plausible(withdrawn_at)
QUALIFY row_number() OVER (
    PARTITION BY event_id ORDER BY CAST(kafka_partition AS VARCHAR), kafka_offset) = 1;

-- Grain: one row per distinct action event (event_id), as above.
CREATE OR REPLACE TEMP TABLE alt_action_events AS
SELECT event_id, request_id, platform, content_id, action, jurisdiction, acted_at
FROM floor_actions
WHERE alt_text(event_id) AND alt_text(action_id) AND alt_text(platform)
  AND alt_text(content_id)
  AND NOT (action = 'RESTRICTED' AND coalesce(jurisdiction, '') = '')
  AND alt_plausible(acted_at)
QUALIFY row_number() OVER (
    PARTITION BY event_id ORDER BY CAST(kafka_partition AS VARCHAR), kafka_offset) = 1;

-- Grain: one row per (rule, jurisdiction it covers): a group name expands to its members.
CREATE OR REPLACE TEMP TABLE alt_rule_jurisdictions AS
SELECT r.rule_id, r.jurisdiction AS covers, r.authority, r.sla_seconds,
       r.effective_from, r.effective_to,
       string_split(r.categories, ',') AS category_list,
       (r.authority <> '*')::INTEGER * 4 + (r.categories <> '*')::INTEGER * 2
           + (r.jurisdiction NOT IN (SELECT group_name FROM alt_sla_groups))::INTEGER
           AS specificity
FROM alt_sla_policy r
UNION
SELECT r.rule_id, g.jurisdiction, r.authority, r.sla_seconds, r.effective_from,
       r.effective_to, string_split(r.categories, ','), 4 * (r.authority <> '*')::INTEGER
           + 2 * (r.categories <> '*')::INTEGER
FROM alt_sla_policy r JOIN alt_sla_groups g ON g.group_name = r.jurisdiction;

-- Grain: one row per request, keyed by content and request_id (a request lives on one
-- content key; a demand re-sent under the same request_id: the earliest issue counts), with
-- its deadline (the strictest rule that applies, ties to the most specific, then by
-- rule_id, or else the flagged default) and its withdrawal (the earliest, not before the
-- issue).
CREATE OR REPLACE TEMP TABLE alt_req AS
WITH issued AS (
    SELECT * FROM alt_request_events WHERE event_type = 'ISSUED'
    QUALIFY row_number() OVER (
        PARTITION BY platform, content_id, request_id ORDER BY issued_at, event_id) = 1
), numbered AS (
    SELECT row_number() OVER () AS rid, * FROM issued  -- any numbering: rid is internal
), matching_rule AS (
    SELECT q.rid, r.rule_id, r.sla_seconds
    FROM numbered q
    JOIN alt_rule_jurisdictions r ON r.covers = q.jurisdiction
    WHERE r.authority IN ('*', q.authority, 'kind:' || q.authority_kind)
      AND (list_contains(r.category_list, '*') OR list_contains(r.category_list, q.category))
      AND r.effective_from <= q.issued_at
      AND (r.effective_to IS NULL OR q.issued_at < r.effective_to)
    QUALIFY row_number() OVER (
        PARTITION BY q.rid ORDER BY r.sla_seconds, r.specificity DESC, r.rule_id) = 1
), binding_rule AS (
    SELECT q.rid, coalesce(m.rule_id, 'DEFAULT') AS rule_id,
           coalesce(m.sla_seconds, getvariable('alt_default_sla_seconds'))::BIGINT
               AS sla_seconds
    FROM numbered q LEFT JOIN matching_rule m USING (rid)
), withdrawals AS (
    SELECT platform, content_id, request_id, min(withdrawn_at) AS withdrawn_at
    FROM alt_request_events
    WHERE event_type = 'WITHDRAWN' AND withdrawn_at IS NOT NULL
    GROUP BY ALL
)
SELECT q.rid, q.request_id, q.event_id, q.platform, q.content_id, q.authority,
       q.authority_kind, q.jurisdiction, q.category, q.content_type, q.legal_basis,
       q.requested_action, q.issued_at,
       q.issued_at + to_seconds(b.sla_seconds) AS due_at,
       b.sla_seconds,
       b.rule_id AS sla_rule_id,
       b.rule_id = 'DEFAULT' AS sla_default_used,
       CASE WHEN w.withdrawn_at IS NOT NULL THEN greatest(w.withdrawn_at, q.issued_at) END
           AS withdrawn_at
FROM numbered q
JOIN binding_rule b USING (rid)
LEFT JOIN withdrawals w USING (platform, content_id, request_id);

-- Grain: one row per (request, action on its content that bears on it): C covers (the
-- content is down for it), U uncovers (reinstated), D declines. Actions at or after the
-- withdrawal are dropped (the lifecycle stops there), except those at the issue itself.
CREATE OR REPLACE TEMP TABLE alt_effects AS
SELECT q.rid, a.acted_at, a.event_id,
    CASE
        WHEN a.action IN ('REMOVED', 'ACCOUNT_SUSPENDED', 'CONTENT_NOT_FOUND') THEN 'C'
        WHEN a.action = 'RESTRICTED'
            AND (a.request_id = q.request_id OR a.jurisdiction = q.jurisdiction) THEN 'C'
        WHEN a.action = 'REINSTATED'
            AND (a.jurisdiction IS NULL OR a.jurisdiction = q.jurisdiction) THEN 'U'
        WHEN a.action = 'DECLINED' AND a.acted_at >= q.issued_at
            AND (a.request_id = q.request_id
                 OR (a.request_id IS NULL
                     AND (a.jurisdiction IS NULL OR a.jurisdiction = q.jurisdiction))) THEN 'D'
    END AS effect
FROM alt_req q
JOIN alt_action_events a USING (platform, content_id)
WHERE effect IS NOT NULL
  AND (a.acted_at <= q.issued_at OR q.withdrawn_at IS NULL OR a.acted_at < q.withdrawn_at);

-- Grain: one row per effect, with the request's disposition after it. A run is the effects
-- since the last U (a reinstatement starts afresh): the content is down when the run holds
-- a C (covered since its first C), declined when it holds a D and no C.
CREATE OR REPLACE TEMP TABLE alt_steps AS
WITH runs AS (
    SELECT *,
        row_number() OVER w AS n,
        -- (acted_at, event_id) is unique per request: the default frame ends at this row
        sum((effect = 'U')::INTEGER) OVER w AS run
    FROM alt_effects
    WINDOW w AS (PARTITION BY rid ORDER BY acted_at, event_id)
), coverage AS (
    SELECT *,
        first_value(CASE WHEN effect = 'C' THEN event_id END IGNORE NULLS) OVER r AS covered_by,
        first_value(CASE WHEN effect = 'C' THEN acted_at END IGNORE NULLS) OVER r AS covered_at,
        first_value(CASE WHEN effect = 'D' THEN event_id END IGNORE NULLS) OVER r AS declined_by
    FROM runs
    WINDOW r AS (PARTITION BY rid, run ORDER BY n ROWS UNBOUNDED PRECEDING)
)
SELECT c.rid, c.n, c.acted_at, c.event_id, c.acted_at <= q.issued_at AS at_issue,
    coalesce(c.covered_by, c.declined_by) AS cause,
    CASE
        WHEN c.covered_by IS NOT NULL THEN
            CASE WHEN greatest(c.covered_at, q.issued_at) <= q.due_at
                 THEN 'RESOLVED_ON_TIME' ELSE 'RESOLVED_LATE' END
        WHEN c.declined_by IS NOT NULL THEN 'DECLINED'
        ELSE 'OPEN'
    END AS disposition
FROM coverage c JOIN alt_req q USING (rid);

-- Grain: one row per request: its disposition once the events up to its issue are applied
-- (content already down: resolved at once), and as of its deadline (BREACHED if then OPEN
-- or DECLINED; actions at deadline + 1 ms come after the breach).
CREATE OR REPLACE TEMP TABLE alt_marks AS
SELECT q.rid,
    coalesce(arg_max(s.disposition, s.n) FILTER (WHERE s.at_issue), 'OPEN') AS born_as,
    arg_max(s.cause, s.n) FILTER (WHERE s.at_issue) AS born_cause,
    coalesce(arg_max(s.disposition, s.n) FILTER (WHERE s.acted_at <= q.due_at), 'OPEN')
        AS at_deadline
FROM alt_req q LEFT JOIN alt_steps s USING (rid)
GROUP BY q.rid;

-- Grain: one row per change in a request's disposition, ordered as the lifecycle function
-- orders steps at the same millisecond: the issue, then a breach, a withdrawal, actions.
CREATE OR REPLACE TEMP TABLE alt_transitions AS
WITH after_issue AS (
    SELECT s.*, coalesce(
            lag(s.disposition) OVER (PARTITION BY s.rid ORDER BY s.n), m.born_as) AS before
    FROM alt_steps s JOIN alt_marks m USING (rid)
    WHERE NOT s.at_issue
), changes AS (
    SELECT rid, issued_at AS moment, 0 AS phase, '' AS tiebreak, 'OPENED' AS transition,
           'OPEN' AS disposition, event_id AS cause_event_id
    FROM alt_req
    UNION ALL
    SELECT m.rid, q.issued_at, 1, '',
           CASE m.born_as WHEN 'DECLINED' THEN 'DECLINED' ELSE 'RESOLVED' END,
           m.born_as, m.born_cause
    FROM alt_marks m JOIN alt_req q USING (rid)
    WHERE m.born_as <> 'OPEN'
    UNION ALL
    SELECT m.rid, q.due_at + INTERVAL 1 MILLISECOND, 2, '', 'BREACHED', m.at_deadline, NULL
    FROM alt_marks m JOIN alt_req q USING (rid)
    WHERE m.at_deadline IN ('OPEN', 'DECLINED')
      AND (q.withdrawn_at IS NULL OR q.withdrawn_at >= q.due_at + INTERVAL 1 MILLISECOND)
    UNION ALL
    SELECT rid, withdrawn_at, 3, '', 'WITHDRAWN', 'WITHDRAWN', NULL
    FROM alt_req WHERE withdrawn_at IS NOT NULL
    UNION ALL
    SELECT rid, acted_at, 4, event_id,
           CASE disposition
               WHEN 'RESOLVED_ON_TIME' THEN 'RESOLVED'
               WHEN 'OPEN' THEN 'REOPENED'
               ELSE disposition
           END,
           disposition, event_id
    FROM after_issue
    WHERE disposition <> before
)
SELECT rid, moment, transition, disposition, cause_event_id,
    (row_number() OVER (PARTITION BY rid ORDER BY moment, phase, tiebreak) - 1)::INTEGER AS seq
FROM changes;

CREATE OR REPLACE TABLE alt_lifecycle_transitions AS
SELECT q.request_id || '#' || t.seq AS transition_id, q.request_id, t.seq, t.transition,
       t.moment AS transition_at, t.disposition, t.cause_event_id
FROM alt_transitions t JOIN alt_req q USING (rid);

CREATE OR REPLACE TABLE alt_requests AS
WITH summary AS (
    SELECT rid,
        bool_or(transition = 'BREACHED') AS breached,
        min(moment) FILTER (WHERE transition IN ('RESOLVED', 'RESOLVED_LATE')) AS first_resolved_at
    FROM alt_transitions GROUP BY rid
)
SELECT q.request_id, q.event_id, q.platform, q.content_id, q.authority, q.authority_kind,
       q.jurisdiction, q.category, q.content_type, q.legal_basis, q.requested_action,
       q.issued_at, q.due_at AS deadline_at, q.sla_seconds, q.sla_rule_id,
       q.sla_default_used, s.breached, s.first_resolved_at, q.withdrawn_at
FROM alt_req q JOIN summary s USING (rid);

-- Every late resolution follows the breach (it is after the deadline; the breach sorts
-- first at deadline + 1 ms), so the first one is the breach's.
CREATE OR REPLACE TABLE alt_sla_breaches AS
SELECT q.request_id, q.platform, q.category, q.authority, q.jurisdiction,
       q.due_at AS deadline_at, b.moment AS breached_at, b.disposition AS disposition_at_breach,
       (SELECT min(l.moment) FROM alt_transitions l
        WHERE l.rid = b.rid AND l.disposition = 'RESOLVED_LATE') AS resolved_at
FROM alt_transitions b JOIN alt_req q USING (rid)
WHERE b.transition = 'BREACHED';

-- Grain: one row per (series, midnight UTC) from the first to the last day a delta of the
-- series falls on (pipelines/transforms.py BacklogByCategory): status segments as
-- lifecycle.status_segments cuts them (a transition followed by one at the same instant
-- holds no time; OPEN turns OVERDUE at deadline + 1 ms), +1 on the first midnight that
-- sees a segment, -1 on the first that sees its end, unless both are the same midnight.
CREATE OR REPLACE TABLE alt_backlog_daily AS
WITH spans AS (
    SELECT t.*, lead(t.moment) OVER (PARTITION BY t.rid ORDER BY t.seq) AS until,
           q.due_at + INTERVAL 1 MILLISECOND AS overdue_from,
           q.category, q.platform, q.authority
    FROM alt_transitions t JOIN alt_req q USING (rid)
), segments AS (
    SELECT category, platform, authority, 'OPEN' AS status, moment AS start,
           CASE WHEN until IS NULL OR until > overdue_from THEN overdue_from ELSE until END
               AS stop
    FROM spans
    WHERE disposition = 'OPEN' AND moment < overdue_from AND (until IS NULL OR until <> moment)
    UNION ALL
    SELECT category, platform, authority, 'OVERDUE', greatest(moment, overdue_from), until
    FROM spans
    WHERE disposition = 'OPEN' AND (until IS NULL OR until <> moment)
      AND (moment >= overdue_from OR until IS NULL OR until > overdue_from)
    UNION ALL
    SELECT category, platform, authority, 'DECLINED', moment, until
    FROM spans
    WHERE disposition = 'DECLINED' AND (until IS NULL OR until <> moment)
), days AS (
    SELECT *, alt_day_at_or_after(start) AS first_day,
           CASE WHEN stop IS NOT NULL THEN alt_day_at_or_after(stop) END AS last_day
    FROM segments
), deltas AS (
    SELECT category, platform, authority, status, first_day AS day, 1 AS delta
    FROM days WHERE last_day IS DISTINCT FROM first_day
    UNION ALL
    SELECT category, platform, authority, status, last_day, -1
    FROM days WHERE last_day IS NOT NULL AND last_day <> first_day
), per_day AS (
    SELECT category, platform, authority, day,
        sum(delta) FILTER (WHERE status = 'OPEN') AS open,
        sum(delta) FILTER (WHERE status = 'OVERDUE') AS overdue,
        sum(delta) FILTER (WHERE status = 'DECLINED') AS declined
    FROM deltas GROUP BY ALL
), series AS (
    SELECT category, platform, authority, unnest(range(first, last + 1)) AS day
    FROM (SELECT category, platform, authority, min(day) AS first, max(day) AS last
          FROM per_day GROUP BY ALL)
), running AS (
    SELECT s.category, s.platform, s.authority, s.day,
        sum(coalesce(p.open, 0)) OVER w AS open,
        sum(coalesce(p.overdue, 0)) OVER w AS overdue,
        sum(coalesce(p.declined, 0)) OVER w AS declined
    FROM series s LEFT JOIN per_day p USING (category, platform, authority, day)
    WINDOW w AS (PARTITION BY s.category, s.platform, s.authority ORDER BY s.day
                 ROWS UNBOUNDED PRECEDING)
)
SELECT to_timestamp(day * 86400) AS as_of, category, platform, authority,
       open::BIGINT AS open, overdue::BIGINT AS overdue, declined::BIGINT AS declined,
       (open + overdue + declined)::BIGINT AS unresolved
FROM running;

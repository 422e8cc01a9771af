-- Batch of suite requests. Grain: one row per request whose history landed in the batch under
-- validation (every row when getvariable('validate_all')), with what the policy table and
-- the events say it should be.
-- policy_consistent: sla_rule_id names a rule of a landed policy version (sla_policy) that
-- covers the request (authority, category, effective window) and gives its sla_seconds; or
-- it is DEFAULT and flagged sla_default_used. (Jurisdiction groups are not in sla_policy:
-- the rule's jurisdiction is not compared.)
SELECT
    r.*,
    r.deadline_at = r.issued_at + to_seconds(r.sla_seconds) AS deadline_is_issue_plus_sla,
    CASE
        WHEN r.sla_rule_id = 'DEFAULT' THEN r.sla_default_used
        ELSE NOT r.sla_default_used AND EXISTS (
            SELECT 1
            FROM sla_policy AS p
            WHERE p.rule_id = r.sla_rule_id
              AND p.sla_seconds = r.sla_seconds
              AND p.authority IN ('*', r.authority, 'kind:' || r.authority_kind)
              AND ('*' IN (SELECT unnest(string_split(p.categories, ',')))
                   OR r.category IN (SELECT unnest(string_split(p.categories, ','))))
              AND p.effective_from <= r.issued_at
              AND (p.effective_to IS NULL OR r.issued_at < p.effective_to)
        )
    END AS policy_consistent,
    epoch(r.first_resolved_at) - epoch(r.issued_at) AS resolved_minus_issued_s,
    EXISTS (SELECT 1 FROM request_events AS e WHERE e.event_id = r.event_id
            AND e.request_id = r.request_id AND e.event_type = 'ISSUED') AS issued_event_landed
FROM requests AS r
WHERE getvariable('validate_all')
   OR r.request_id IN (SELECT key FROM validation_scope WHERE table_name = 'requests')

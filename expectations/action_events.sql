-- Batch of suite action_events. Grain: one row per action event landed in the batch under
-- validation (every row when getvariable('validate_all')). acted_minus_issued_s: for an
-- action naming a landed request, seconds from the request's issue to the action (NULL
-- otherwise). The request's issue time is one value per request_id (the earliest), so a
-- request_id landed twice (the requests suite's own failure) does not repeat the action's row.
SELECT
    a.*,
    a.action <> 'RESTRICTED' OR a.jurisdiction IS NOT NULL AS restriction_has_jurisdiction,
    epoch(a.acted_at) - epoch(r.issued_at) AS acted_minus_issued_s
FROM action_events AS a
LEFT JOIN (
    SELECT request_id, min(issued_at) AS issued_at FROM requests GROUP BY request_id
) AS r ON r.request_id = a.request_id
WHERE getvariable('validate_all')
   OR a.event_id IN (SELECT key FROM validation_scope WHERE table_name = 'action_events')

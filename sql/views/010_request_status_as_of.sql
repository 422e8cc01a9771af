-- Macro: request_status_as_of(as_of). Grain: one row per request issued at or before as_of.
-- Status uses only events with event time <= as_of: OPEN, OVERDUE (open past its deadline),
-- RESOLVED_ON_TIME, RESOLVED_LATE, DECLINED, WITHDRAWN; unresolved = OPEN, OVERDUE, DECLINED.
-- Example: SELECT status, count(*) FROM request_status_as_of(TIMESTAMPTZ '2021-03-01') GROUP BY 1;
CREATE OR REPLACE MACRO request_status_as_of(as_of) AS TABLE
SELECT
    r.*,
    CASE
        WHEN d.disposition = 'OPEN' AND as_of > r.deadline_at THEN 'OVERDUE'
        ELSE d.disposition
    END AS status,
    CASE
        WHEN d.disposition = 'OPEN' AND as_of > r.deadline_at THEN true
        ELSE d.disposition IN ('OPEN', 'DECLINED')
    END AS unresolved
FROM requests AS r
JOIN (
    SELECT request_id, arg_max(disposition, seq) AS disposition
    FROM lifecycle_transitions
    WHERE transition_at <= as_of
    GROUP BY request_id
) AS d USING (request_id);

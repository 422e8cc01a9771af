-- Naive reference for the lifecycle function, written straight from DESIGN.md's semantics.
-- Grain: one row per (request_id, t) in `points`. Inputs (registered by the test):
--   request_events(event_id, request_id, event_type, jurisdiction, platform, content_id,
--                  issued_at, withdrawn_at)       -- may hold repeated deliveries
--   action_events(event_id, request_id, platform, content_id, action, jurisdiction, acted_at)
--   deadlines(request_id, due_at)                   -- from the SLA policy, per request
--   points(request_id, t)                           -- where to evaluate the status
-- Output: request_id, t, status (NULL when the request is not issued by t).
WITH req AS (
    SELECT DISTINCT * FROM request_events
), act AS (
    SELECT DISTINCT * FROM action_events
), issued AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY issued_at, event_id) AS rn
        FROM req WHERE event_type = 'ISSUED'
    ) WHERE rn = 1
), pts AS (
    SELECT p.request_id, p.t, i.platform, i.content_id, i.jurisdiction, i.issued_at, d.due_at
    FROM points p JOIN issued i USING (request_id) JOIN deadlines d USING (request_id)
    WHERE i.issued_at <= p.t
), withdrawn AS (
    SELECT p.request_id, p.t
    FROM pts p JOIN req w ON w.request_id = p.request_id
    WHERE w.event_type = 'WITHDRAWN' AND w.withdrawn_at IS NOT NULL AND w.withdrawn_at <= p.t
    GROUP BY ALL
), rel AS (
    SELECT p.request_id, p.t, a.acted_at, a.event_id,
        CASE
            WHEN a.action IN ('REMOVED', 'ACCOUNT_SUSPENDED', 'CONTENT_NOT_FOUND') THEN 'C'
            WHEN a.action = 'RESTRICTED'
                AND (a.request_id IS NOT DISTINCT FROM p.request_id
                     OR a.jurisdiction IS NOT DISTINCT FROM p.jurisdiction) THEN 'C'
            WHEN a.action = 'REINSTATED'
                AND (a.jurisdiction IS NULL OR a.jurisdiction = p.jurisdiction) THEN 'U'
            WHEN a.action = 'DECLINED' AND a.acted_at >= p.issued_at
                AND (a.request_id IS NOT DISTINCT FROM p.request_id
                     OR (a.request_id IS NULL
                         AND (a.jurisdiction IS NULL OR a.jurisdiction = p.jurisdiction))) THEN 'D'
        END AS kind
    FROM pts p JOIN act a ON a.platform = p.platform AND a.content_id = p.content_id
    WHERE a.acted_at <= p.t
), rel_known AS (
    SELECT * FROM rel WHERE kind IS NOT NULL
), last_cover_state AS (   -- the last C or U event decides whether the content is down
    SELECT request_id, t, arg_max(kind, (acted_at, event_id)) AS kind
    FROM rel_known WHERE kind IN ('C', 'U') GROUP BY request_id, t
), last_uncover AS (
    SELECT request_id, t, max((acted_at, event_id)) AS brk
    FROM rel_known WHERE kind = 'U' GROUP BY request_id, t
), run_start AS (           -- first C since the last U
    SELECT r.request_id, r.t, min(r.acted_at) AS start
    FROM rel_known r LEFT JOIN last_uncover b USING (request_id, t)
    WHERE r.kind = 'C' AND (b.brk IS NULL OR (r.acted_at, r.event_id) > b.brk)
    GROUP BY r.request_id, r.t
), declined AS (            -- a refusal since the last U
    SELECT DISTINCT r.request_id, r.t
    FROM rel_known r LEFT JOIN last_uncover b USING (request_id, t)
    WHERE r.kind = 'D' AND (b.brk IS NULL OR (r.acted_at, r.event_id) > b.brk)
)
SELECT p.request_id, p.t,
    CASE
        WHEN w.request_id IS NOT NULL THEN 'WITHDRAWN'
        WHEN l.kind = 'C' THEN
            CASE WHEN greatest(s.start, p.issued_at) <= p.due_at
                 THEN 'RESOLVED_ON_TIME' ELSE 'RESOLVED_LATE' END
        WHEN d.request_id IS NOT NULL THEN 'DECLINED'
        WHEN p.t > p.due_at THEN 'OVERDUE'
        ELSE 'OPEN'
    END AS status
FROM pts p
LEFT JOIN withdrawn w USING (request_id, t)
LEFT JOIN last_cover_state l USING (request_id, t)
LEFT JOIN run_start s USING (request_id, t)
LEFT JOIN declined d USING (request_id, t)

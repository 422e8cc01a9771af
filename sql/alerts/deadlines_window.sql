-- Query: deadlines that fell due per day and how many of them were missed, per finest
-- series, over days [$first, $last] (day numbers since 1970-01-01). A deadline counts on the
-- first midnight at or after deadline + 1 ms (when a breach is recorded), as the backlog's
-- OVERDUE does; requests withdrawn before their deadline are not due.
-- Grain: one row per (day, category, platform, authority) with a deadline.
-- @param first BIGINT  first day number
-- @param last  BIGINT  last day number
WITH due AS (
    SELECT r.request_id, r.category, r.platform, r.authority,
        epoch_us(r.deadline_at + INTERVAL 1 MILLISECOND) AS at_us
    FROM requests AS r
    WHERE r.withdrawn_at IS NULL OR r.withdrawn_at > r.deadline_at
), days AS (
    SELECT request_id, category, platform, authority,
        at_us // 86400000000 + CAST(at_us % 86400000000 > 0 AS BIGINT) AS day
    FROM due
)
SELECT d.day, d.category, d.platform, d.authority, count(*) AS due,
    count(b.request_id) AS breached
FROM days AS d
LEFT JOIN (SELECT DISTINCT request_id FROM sla_breaches) AS b USING (request_id)
WHERE d.day BETWEEN $first AND $last
GROUP BY ALL
ORDER BY ALL

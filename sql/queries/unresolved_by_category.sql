-- Unresolved requests by category as of a time (the regulator's "not deleted" count).
-- Grain: one row per category, plus category = 'ALL' for the total.
-- @param as_of  timestamp (UTC), e.g. 2021-03-01 or 2021-03-01T12:00:00Z
SELECT
    coalesce(category, 'ALL') AS category,
    count(*) FILTER (WHERE status = 'OPEN') AS open,
    count(*) FILTER (WHERE status = 'OVERDUE') AS overdue,
    count(*) FILTER (WHERE status = 'DECLINED') AS declined,
    count(*) AS unresolved
FROM request_status_as_of(CAST($as_of AS TIMESTAMPTZ))
WHERE unresolved
GROUP BY ROLLUP (category)
ORDER BY category IS NULL, unresolved DESC, category;

-- Query: the daily backlog the alert rules read, per finest series, over days
-- [$first, $last] (day numbers: days since 1970-01-01, midnights UTC), with each series'
-- last row before $first (carried = true: the value it holds on entering the window).
-- Grain: one row per (day, category, platform, authority) present in backlog_daily.
-- @param first BIGINT  first day number of the window
-- @param last  BIGINT  last day number of the window
WITH days AS (
    SELECT epoch_us(as_of) // 86400000000 AS day, category, platform, authority,
        unresolved, overdue
    FROM backlog_daily
)
SELECT day, category, platform, authority, unresolved, overdue, false AS carried
FROM days
WHERE day BETWEEN $first AND $last
UNION ALL
SELECT max(day), category, platform, authority,
    arg_max(unresolved, day), arg_max(overdue, day), true
FROM days
WHERE day < $first
GROUP BY category, platform, authority
ORDER BY day, category, platform, authority

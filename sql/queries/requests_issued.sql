-- Requests issued in a period, by category.
-- Grain: one row per category, plus category = 'ALL' for the total.
-- @param since  timestamp (UTC), start of the period (inclusive)
-- @param as_of  timestamp (UTC), end of the period (inclusive)
SELECT coalesce(category, 'ALL') AS category, count(DISTINCT request_id) AS requests
FROM requests
WHERE issued_at >= CAST($since AS TIMESTAMPTZ) AND issued_at <= CAST($as_of AS TIMESTAMPTZ)
GROUP BY ROLLUP (category)
ORDER BY category IS NULL, requests DESC, category;

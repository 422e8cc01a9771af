-- Time from issue to first resolution (removal or restriction), in hours, by category.
-- Grain: one row per category; requests never resolved are counted, not timed.
SELECT
    category,
    count(*) AS requests,
    count(first_resolved_at) AS resolved,
    round(quantile_cont(epoch(first_resolved_at - issued_at) / 3600, 0.5), 2) AS p50_hours,
    round(quantile_cont(epoch(first_resolved_at - issued_at) / 3600, 0.9), 2) AS p90_hours,
    round(quantile_cont(epoch(first_resolved_at - issued_at) / 3600, 0.99), 2) AS p99_hours,
    round(count(*) FILTER (WHERE first_resolved_at <= deadline_at) / count(*), 4) AS on_time_share
FROM requests
GROUP BY category
ORDER BY requests DESC, category;

-- Time from issue to first resolution, in hours, by category and by how the request was
-- first resolved. Grain: one row per (category, resolved_by).
-- resolved_by: the platform action that first resolved the request (REMOVED, RESTRICTED,
-- ACCOUNT_SUSPENDED, CONTENT_NOT_FOUND); ALREADY_DOWN: the content was down before the
-- request was issued, so it resolved at issue (0 h: not a response time of the platform);
-- NOT_RESOLVED: never resolved (open, declined or withdrawn): counted, not timed.
-- on_time_share: the share of the row's requests first resolved by their deadline.
WITH first_resolution AS (
    SELECT
        request_id,
        arg_min(cause_event_id, seq) AS cause_event_id,
        min(transition_at) AS resolved_at
    FROM lifecycle_transitions
    WHERE transition IN ('RESOLVED', 'RESOLVED_LATE')
    GROUP BY request_id
),
resolved AS (
    SELECT
        r.category,
        r.issued_at,
        r.deadline_at,
        f.resolved_at,
        CASE
            WHEN f.request_id IS NULL THEN 'NOT_RESOLVED'
            WHEN a.acted_at < r.issued_at THEN 'ALREADY_DOWN'
            ELSE coalesce(a.action, 'UNKNOWN_CAUSE')
        END AS resolved_by
    FROM requests AS r
    LEFT JOIN first_resolution AS f ON f.request_id = r.request_id
    LEFT JOIN action_events AS a ON a.event_id = f.cause_event_id
)
SELECT
    category,
    resolved_by,
    count(*) AS requests,
    round(quantile_cont(epoch(resolved_at - issued_at) / 3600, 0.5), 2) AS p50_hours,
    round(quantile_cont(epoch(resolved_at - issued_at) / 3600, 0.9), 2) AS p90_hours,
    round(quantile_cont(epoch(resolved_at - issued_at) / 3600, 0.99), 2) AS p99_hours,
    round(count(*) FILTER (WHERE resolved_at <= deadline_at) / count(*), 4) AS on_time_share
FROM resolved
GROUP BY category, resolved_by
ORDER BY category, resolved_by = 'NOT_RESOLVED', requests DESC, resolved_by;

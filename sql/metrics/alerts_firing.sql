-- Metrics: alert episodes firing. Grain: one row per (rule, severity) with a row in alerts.
-- @param as_of TIMESTAMPTZ or NULL. NULL: the episodes not resolved (resolved_at IS NULL).
-- A time T: the episodes firing at T (fired_at <= T, not resolved by T), for backtesting.
SELECT rule, severity,
       count(*) FILTER (
           WHERE CASE
               WHEN $as_of::TIMESTAMPTZ IS NULL THEN resolved_at IS NULL
               ELSE fired_at <= $as_of::TIMESTAMPTZ
                    AND (resolved_at IS NULL OR resolved_at > $as_of::TIMESTAMPTZ)
           END
       ) AS firing
FROM alerts
GROUP BY rule, severity
ORDER BY rule, severity

-- Metrics: alert notifications not delivered yet. Grain: one row per sink with a row in
-- alert_notifications (0 when every one of its notifications is delivered).
SELECT sink, count(*) FILTER (WHERE delivered_at IS NULL) AS pending
FROM alert_notifications
GROUP BY sink
ORDER BY sink

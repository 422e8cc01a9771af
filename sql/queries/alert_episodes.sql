-- Alert episodes: every time an alert rule fired for a label set, when (event time for the
-- backlog, overdue and breach-rate rules), for how long, and when the pipeline saw it.
-- Grain: one row per episode (alerts.alert_id), in the order they fired.
-- @param rule  an alert rule name, or 'ALL' (default ALL)
SELECT rule, severity,
       json_extract_string(labels, '$.category') AS category,
       json_extract_string(labels, '$.platform') AS platform,
       json_extract_string(labels, '$.authority') AS authority,
       fired_at, resolved_at,
       round(epoch(resolved_at - fired_at) / 86400, 1) AS days_firing,
       detected_at, summary, alert_id
FROM alerts
WHERE $rule = 'ALL' OR rule = $rule
ORDER BY fired_at, rule, labels;

-- Orphan actions still unmatched: actions on content no landed request targets, taken longer
-- than a grace period before the data horizon (the latest event time landed). An orphan is
-- not an error and is never quarantined: a request may arrive after the action, and is then
-- resolved by it at once and leaves this list. Those that stay are reported here.
-- Grain: one row per action, oldest first.
-- @param grace_days  days of event time an orphan may wait for its request (default 30)
SELECT a.event_id, a.action_id, a.platform, a.content_id, a.action, a.jurisdiction,
       a.acted_at, a.source_ref,
       round(epoch(h.horizon - a.acted_at) / 86400, 1) AS waiting_days
FROM orphan_actions AS a, data_horizon AS h
WHERE a.acted_at <= h.horizon - to_days(CAST($grace_days AS INTEGER))
ORDER BY a.acted_at, a.event_id;

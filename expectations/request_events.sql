-- Batch of suite request_events. Grain: one row per request event landed in the batch under
-- validation (every row when getvariable('validate_all')), with the derived columns the
-- suite checks.
SELECT
    e.*,
    (e.event_type = 'WITHDRAWN') = (e.withdrawn_at IS NOT NULL) AS withdrawn_at_iff_withdrawn,
    e.event_time = coalesce(e.withdrawn_at, e.issued_at) AS event_time_is_own_time
FROM request_events AS e
WHERE getvariable('validate_all')
   OR e.event_id IN (SELECT key FROM validation_scope WHERE table_name = 'request_events')

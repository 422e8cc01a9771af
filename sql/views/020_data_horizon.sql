-- View: data_horizon. Grain: one row: the latest event time landed (requests and actions).
-- "Now" for the data, so current-status views do not depend on the wall clock.
CREATE OR REPLACE VIEW data_horizon AS
SELECT greatest(
    (SELECT max(event_time) FROM request_events),
    (SELECT max(acted_at) FROM action_events)
) AS horizon;

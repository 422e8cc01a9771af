-- Table: current_load. Grain: one row once a batch load has committed: the load
-- (load_ledger.run_id) whose rows the audit tables hold now, with everything derived from
-- them (alerts of the event-time rules, alert_tracks, alert_evaluations), and when it was
-- landed (wall clock; a replay of an earlier load lands it again). Every load replaces it.
CREATE TABLE IF NOT EXISTS current_load (
    run_id VARCHAR NOT NULL,
    landed_at TIMESTAMPTZ NOT NULL
);

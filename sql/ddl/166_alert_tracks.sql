-- Table: alert_tracks. Grain: one row per (rule, label set) the alert evaluation has seen:
-- its state between evaluations (pipelines/alerting.py Track). holds_since / clear_since:
-- the first day of the current run of days the condition held / failed; alert_id: the
-- episode firing now (NULL: none).
CREATE TABLE IF NOT EXISTS alert_tracks (
    rule VARCHAR NOT NULL,
    labels VARCHAR NOT NULL,              -- JSON object, keys sorted
    holds_since DATE,
    clear_since DATE,
    alert_id VARCHAR,
    fired_on DATE,
    PRIMARY KEY (rule, labels)
);

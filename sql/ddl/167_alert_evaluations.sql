-- Table: alert_evaluations. Grain: one row per alert rule: the last day (midnight UTC of
-- event time) it was evaluated through; the next evaluation starts the day after. Days
-- already evaluated are not evaluated again (the alerts said then what was known then).
CREATE TABLE IF NOT EXISTS alert_evaluations (
    rule VARCHAR PRIMARY KEY,
    rule_digest VARCHAR NOT NULL,         -- the rule's definition it was evaluated with
    evaluated_through DATE NOT NULL,
    evaluated_at TIMESTAMPTZ NOT NULL
);

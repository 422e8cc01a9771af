-- Table: alerts. Grain: one row per alert episode: a rule firing for one label set, from
-- fired_at until resolved_at (NULL while it fires). At most one firing row per (rule, labels).
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,            -- critical | warning | info
    labels VARCHAR NOT NULL,              -- JSON object, keys sorted
    summary VARCHAR NOT NULL,
    evidence VARCHAR NOT NULL,            -- JSON: the numbers behind it
    runbook VARCHAR NOT NULL,
    fired_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ
);

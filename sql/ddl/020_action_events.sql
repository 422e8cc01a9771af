-- Table: action_events. Grain: one row per distinct platform action event (event_id).
CREATE TABLE IF NOT EXISTS action_events (
    event_id VARCHAR PRIMARY KEY,
    action_id VARCHAR NOT NULL,
    request_id VARCHAR,                   -- the demand answered, when the platform says so
    platform VARCHAR NOT NULL,
    content_id VARCHAR NOT NULL,
    action VARCHAR NOT NULL,              -- REMOVED | RESTRICTED | ACCOUNT_SUSPENDED | DECLINED | CONTENT_NOT_FOUND | REINSTATED
    jurisdiction VARCHAR,                 -- null: everywhere
    acted_at TIMESTAMPTZ NOT NULL,
    schema_version INTEGER NOT NULL,
    source_ref VARCHAR NOT NULL
);

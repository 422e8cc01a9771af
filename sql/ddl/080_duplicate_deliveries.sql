-- Table: duplicate_deliveries. Grain: one row per repeated delivery of an event already kept.
CREATE TABLE IF NOT EXISTS duplicate_deliveries (
    source_ref VARCHAR PRIMARY KEY,
    topic VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    kept_source_ref VARCHAR NOT NULL      -- the delivery that was landed
);

-- Table: quarantine. Grain: one row per refused message, kept byte for byte.
CREATE TABLE IF NOT EXISTS quarantine (
    quarantine_id VARCHAR PRIMARY KEY,    -- = source_ref
    topic VARCHAR NOT NULL,
    source_ref VARCHAR NOT NULL,
    reason_code VARCHAR NOT NULL,         -- connectors.errors.ReasonCode
    message VARCHAR NOT NULL,
    event_id VARCHAR,                     -- when it could be read
    raw_key BLOB,
    raw_value BLOB NOT NULL
);

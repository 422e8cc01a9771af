-- Table: request_events. Grain: one row per distinct request event (event_id), as decoded.
-- Repeated deliveries are in duplicate_deliveries; refused messages in quarantine.
CREATE TABLE IF NOT EXISTS request_events (
    event_id VARCHAR PRIMARY KEY,
    request_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,          -- ISSUED | WITHDRAWN
    authority VARCHAR NOT NULL,
    authority_kind VARCHAR NOT NULL,
    jurisdiction VARCHAR NOT NULL,
    platform VARCHAR NOT NULL,
    content_id VARCHAR NOT NULL,
    content_type VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    legal_basis VARCHAR NOT NULL,
    requested_action VARCHAR NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL,
    withdrawn_at TIMESTAMPTZ,
    event_time TIMESTAMPTZ NOT NULL,      -- issued_at, or withdrawn_at for withdrawals
    schema_version INTEGER NOT NULL,      -- writer schema version of removal.requests-value
    source_ref VARCHAR NOT NULL           -- file#record or topic/partition#offset
);

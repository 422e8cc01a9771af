-- Table: requests. Grain: one row per request (request_id), with its deadline from the SLA
-- policy table and a summary of its lifecycle. Status as of a time: request_status_as_of().
CREATE TABLE IF NOT EXISTS requests (
    request_id VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,            -- the ISSUED event the request comes from
    platform VARCHAR NOT NULL,
    content_id VARCHAR NOT NULL,
    authority VARCHAR NOT NULL,
    authority_kind VARCHAR NOT NULL,
    jurisdiction VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    content_type VARCHAR NOT NULL,
    legal_basis VARCHAR NOT NULL,
    requested_action VARCHAR NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL,
    deadline_at TIMESTAMPTZ NOT NULL,
    sla_seconds BIGINT NOT NULL,
    sla_rule_id VARCHAR NOT NULL,         -- sla_policy.rule_id, or DEFAULT
    sla_default_used BOOLEAN NOT NULL,    -- true: no policy rule covered it (flag for review)
    breached BOOLEAN NOT NULL,            -- unresolved when its deadline passed
    first_resolved_at TIMESTAMPTZ,
    withdrawn_at TIMESTAMPTZ
);

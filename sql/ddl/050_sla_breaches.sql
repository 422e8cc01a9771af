-- Table: sla_breaches. Grain: one row per request unresolved when its deadline passed.
CREATE TABLE IF NOT EXISTS sla_breaches (
    request_id VARCHAR NOT NULL,
    platform VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    authority VARCHAR NOT NULL,
    jurisdiction VARCHAR NOT NULL,
    deadline_at TIMESTAMPTZ NOT NULL,
    breached_at TIMESTAMPTZ NOT NULL,     -- deadline_at + 1 ms
    disposition_at_breach VARCHAR NOT NULL, -- OPEN or DECLINED
    resolved_at TIMESTAMPTZ               -- first late resolution after the breach, if any
);

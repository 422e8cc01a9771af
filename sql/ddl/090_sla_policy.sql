-- Table: sla_policy. Grain: one row per rule of each SLA policy version that was applied.
CREATE TABLE IF NOT EXISTS sla_policy (
    policy_version VARCHAR NOT NULL,
    rule_id VARCHAR NOT NULL,
    jurisdiction VARCHAR NOT NULL,
    authority VARCHAR NOT NULL,
    categories VARCHAR NOT NULL,
    sla_seconds BIGINT NOT NULL,
    effective_from TIMESTAMPTZ NOT NULL,
    effective_to TIMESTAMPTZ,
    law VARCHAR NOT NULL,
    note VARCHAR NOT NULL,
    PRIMARY KEY (policy_version, rule_id)
);

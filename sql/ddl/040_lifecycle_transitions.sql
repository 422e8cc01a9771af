-- Table: lifecycle_transitions. Grain: one row per change in a request's disposition.
-- transition: OPENED | RESOLVED | RESOLVED_LATE | BREACHED | DECLINED | WITHDRAWN | REOPENED
-- disposition (after the transition): OPEN | RESOLVED_ON_TIME | RESOLVED_LATE | DECLINED | WITHDRAWN
CREATE TABLE IF NOT EXISTS lifecycle_transitions (
    transition_id VARCHAR NOT NULL,       -- request_id#seq
    request_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,                 -- order within the request
    transition VARCHAR NOT NULL,
    transition_at TIMESTAMPTZ NOT NULL,   -- event time of the change
    disposition VARCHAR NOT NULL,
    cause_event_id VARCHAR                -- the event that caused it (null for BREACHED)
);

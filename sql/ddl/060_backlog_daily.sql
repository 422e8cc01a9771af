-- Table: backlog_daily. Grain: one row per (as_of midnight UTC, category, platform,
-- authority), from the first to the last day that series changes; it holds steady after.
CREATE TABLE IF NOT EXISTS backlog_daily (
    as_of TIMESTAMPTZ NOT NULL,
    category VARCHAR NOT NULL,
    platform VARCHAR NOT NULL,
    authority VARCHAR NOT NULL,
    open BIGINT NOT NULL,
    overdue BIGINT NOT NULL,
    declined BIGINT NOT NULL,
    unresolved BIGINT NOT NULL            -- open + overdue + declined
);

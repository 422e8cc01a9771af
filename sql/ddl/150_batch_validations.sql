-- Table: batch_validations. Grain: one row per (validation, suite): one run of a Great
-- Expectations suite (expectations/<suite>.json over the rows expectations/<suite>.sql
-- selects) on the rows of the batches it names, or on every row (scope 'all').
CREATE TABLE IF NOT EXISTS batch_validations (
    validation_id VARCHAR NOT NULL,
    suite VARCHAR NOT NULL,
    path VARCHAR NOT NULL,                -- batch | stream | on-demand
    scope VARCHAR NOT NULL,               -- batch (the batches' rows) | all
    batch_ids VARCHAR NOT NULL,           -- JSON list: load_ledger.run_id or batch_ledger.batch_id
    rows_checked BIGINT NOT NULL,
    evaluated INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    success BOOLEAN NOT NULL,
    failures VARCHAR NOT NULL,            -- JSON list: expectation, column(s), unexpected count, sample keys
    validated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (validation_id, suite)
);

-- Table: load_ledger. Grain: one row per distinct load (run_id = hash of the input files'
-- names and bytes, the policy version and the pipeline version): a replay of the same
-- inputs finds its row and leaves it as it was. current_load names the one the tables hold.
CREATE TABLE IF NOT EXISTS load_ledger (
    run_id VARCHAR PRIMARY KEY,
    inputs VARCHAR NOT NULL,              -- JSON: [{"file": name, "sha256": hex}], name as in source_ref
    policy_version VARCHAR NOT NULL,
    pipeline_version VARCHAR NOT NULL,
    records_in BIGINT NOT NULL,
    landed BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    quarantined BIGINT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL        -- first time these inputs were landed
);

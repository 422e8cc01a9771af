-- Table: batch_ledger. Grain: one row per streaming batch landed (batch_id, derived from the
-- source offsets it covers), written in the same transaction as the batch's rows: a batch
-- is in the ledger if and only if its rows are landed, so a replay finds it and does nothing,
-- and the source resumes from max(last offset) + 1 of each (topic, partition).
CREATE TABLE IF NOT EXISTS batch_ledger (
    batch_id VARCHAR PRIMARY KEY,
    offsets VARCHAR NOT NULL,             -- JSON: [{"topic", "partition", "first", "last"}]
    row_counts VARCHAR NOT NULL,          -- JSON: {"table": rows in the batch}
    committed_at TIMESTAMPTZ NOT NULL
);

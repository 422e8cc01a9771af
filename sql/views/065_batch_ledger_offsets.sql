-- View: batch_ledger_offsets. Grain: one row per run of source offsets a landed streaming
-- batch covers (batch_ledger.offsets, a JSON list, one element per row): the batch, when it
-- was committed, the Kafka topic and partition, and the first and last offset of the run.
-- Runs of one batch do not overlap; runs of different batches may (a replayed batch under
-- another id). Expanded by UNNEST in the select list, not by a join against UNNEST: the
-- join copied each batch's whole JSON text into every run it produced (DuckDB 2.0.0), so a
-- batch of 10,000 runs and 1 MB of JSON took 10 GB, and a 1M-event replay was OOM-killed.
CREATE OR REPLACE VIEW batch_ledger_offsets AS
SELECT batch_id, committed_at, o.topic, o.partition, o.first, o.last
FROM (
    SELECT batch_id, committed_at,
           unnest(from_json(offsets,
               '[{"topic":"VARCHAR","partition":"INTEGER","first":"BIGINT","last":"BIGINT"}]')) AS o
    FROM batch_ledger
);

-- View: stream_account. Grain: one row: the streaming path's record account. records_in is
-- the number of distinct source offsets the landed batches cover (batch_ledger_offsets,
-- overlapping runs merged); every one of them is a landed event, a duplicate delivery or a
-- quarantined record, so balanced = records_in = landed + duplicates + quarantined. (Batch
-- loads have theirs in record_account.)
CREATE OR REPLACE VIEW stream_account AS
WITH covered AS (
    SELECT topic, partition, first, last FROM batch_ledger_offsets
), ordered AS (
    SELECT *, max(last) OVER (PARTITION BY topic, partition ORDER BY first, last
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reached
    FROM covered
), islands AS (
    SELECT *, sum(CASE WHEN reached IS NULL OR first > reached + 1 THEN 1 ELSE 0 END)
                  OVER (PARTITION BY topic, partition ORDER BY first, last) AS island
    FROM ordered
), merged AS (
    SELECT topic, partition, island, min(first) AS first, max(last) AS last
    FROM islands GROUP BY ALL
), account AS (
    SELECT (SELECT coalesce(sum(last - first + 1), 0) FROM merged) AS records_in,
           (SELECT count(*) FROM request_events) + (SELECT count(*) FROM action_events) AS landed,
           (SELECT count(*) FROM duplicate_deliveries) AS duplicates,
           (SELECT count(*) FROM quarantine) AS quarantined
)
SELECT records_in, landed, duplicates, quarantined,
       records_in = landed + duplicates + quarantined AS balanced
FROM account;

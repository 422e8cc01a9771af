-- Metrics: batches the data-quality gate holds back from the auditors. Grain: one row.
SELECT count(*) AS held
FROM batch_holds
WHERE status = 'HELD'

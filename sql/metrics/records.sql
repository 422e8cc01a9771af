-- Metrics: the database's record account and clocks. Grain: one row.
-- records_in: a streaming database's (rows in batch_ledger) from the stream_account view; a
-- batch database's from the load its tables hold (record_account: the current load; in a
-- database made before current_load existed, one row per load, the latest first landing
-- taken); 0 when nothing has landed. landed, duplicates: rows in the tables now.
-- last_landed_at: wall clock of the last landed batch or load; horizon: the data_horizon view.
SELECT
    CASE
        WHEN EXISTS (SELECT 1 FROM batch_ledger) THEN (SELECT records_in FROM stream_account)
        ELSE coalesce((SELECT arg_max(records_in, loaded_at) FROM record_account), 0)
    END AS records_in,
    (SELECT count(*) FROM request_events) + (SELECT count(*) FROM action_events) AS landed,
    (SELECT count(*) FROM duplicate_deliveries) AS duplicates,
    greatest(
        (SELECT max(committed_at) FROM batch_ledger),
        (SELECT max(loaded_at) FROM load_ledger)
    ) AS last_landed_at,
    (SELECT horizon FROM data_horizon) AS horizon

-- View: record_account. Grain: one row per load: every record in is landed, a duplicate
-- delivery or quarantined; balanced = records_in = landed + duplicates + quarantined.
CREATE OR REPLACE VIEW record_account AS
SELECT run_id, loaded_at, records_in, landed, duplicates, quarantined,
       records_in = landed + duplicates + quarantined AS balanced
FROM load_ledger;

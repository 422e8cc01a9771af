-- View: record_account. Grain: one row: the current load (current_load), the one the audit
-- tables hold: every record in is landed, a duplicate delivery or quarantined; balanced =
-- records_in = landed + duplicates + quarantined. Every load ever landed: load_ledger.
CREATE OR REPLACE VIEW record_account AS
SELECT l.run_id, c.landed_at, l.loaded_at, l.records_in, l.landed, l.duplicates,
       l.quarantined, l.records_in = l.landed + l.duplicates + l.quarantined AS balanced
FROM load_ledger AS l JOIN current_load AS c USING (run_id);

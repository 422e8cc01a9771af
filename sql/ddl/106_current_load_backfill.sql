-- Migration: a database loaded before current_load existed held one load at a time too,
-- the last one landed; its latest first landing is the best record of it.
INSERT INTO current_load
SELECT run_id, loaded_at FROM load_ledger
WHERE NOT EXISTS (SELECT 1 FROM current_load)
ORDER BY loaded_at DESC
LIMIT 1;

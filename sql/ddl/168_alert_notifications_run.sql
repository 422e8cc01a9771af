-- Migration of alert_notifications: the batch load (load_ledger.run_id; batch_holds.batch_id
-- for a held one) that queued each notification; NULL: the streaming job. A load replaces
-- the alerts with the tables they derive from; the notifications it had sent stay, as the
-- history of what receivers were told, and this says which load told them.
ALTER TABLE alert_notifications ADD COLUMN IF NOT EXISTS run_id VARCHAR;

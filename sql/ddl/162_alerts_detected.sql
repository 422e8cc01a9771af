-- Migration of alerts: when the pipeline recorded each alert (wall clock). For event-time
-- rules fired_at / resolved_at are event times (when the condition began / ended in the
-- data) and these say when the pipeline saw it; for operational alerts (BatchHeld) they
-- are equal.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS detected_at TIMESTAMPTZ;

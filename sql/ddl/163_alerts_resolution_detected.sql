-- Migration of alerts: when the pipeline recorded the resolution (wall clock).
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS resolution_detected_at TIMESTAMPTZ;

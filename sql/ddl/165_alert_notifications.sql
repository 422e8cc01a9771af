-- Table: alert_notifications. Grain: one row per (alert episode, status, sink): the outbox
-- the alert sinks deliver from, written in the transaction that records the alert, so a
-- notification is sent at least once even across a crash (receivers dedupe by
-- notification_id). status: firing | resolved; sink: kafka | webhook.
CREATE TABLE IF NOT EXISTS alert_notifications (
    notification_id VARCHAR PRIMARY KEY,  -- alert_id:status:sink
    alert_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    sink VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ,             -- NULL while pending
    last_error VARCHAR
);

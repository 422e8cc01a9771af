-- Table: batch_holds. Grain: one row per batch the data-quality gate held back from the
-- auditors. HELD: not published (the streaming snapshot stops at the last good state; a batch
-- load leaves the previous tables); RELEASED: a later validation of every row passed;
-- ACCEPTED: an operator accepted it (`removal-audit validate --accept`), with a note.
CREATE TABLE IF NOT EXISTS batch_holds (
    batch_id VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,                -- batch | stream
    validation_id VARCHAR NOT NULL,       -- batch_validations.validation_id that held it
    failed_suites VARCHAR NOT NULL,       -- comma-separated suite names
    held_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,              -- HELD | RELEASED | ACCEPTED
    resolved_at TIMESTAMPTZ,
    resolution VARCHAR                    -- the passing validation_id, or the operator's note
);

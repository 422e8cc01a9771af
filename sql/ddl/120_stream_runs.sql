-- Table: stream_runs. Grain: one row per start of the streaming pipeline on this database.
-- start_offsets is where each partition was read from at that start; the first run's start
-- is where the landed offsets count from (see StreamSink.resume_offsets). watermark is the
-- event time up to which everything the run read has been landed (progress for on-call and
-- tests); last_landed_at the wall-clock time of its last landed batch.
CREATE TABLE IF NOT EXISTS stream_runs (
    run INTEGER PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    start_offsets VARCHAR NOT NULL,       -- JSON: [{"topic", "partition", "offset"}]
    watermark TIMESTAMPTZ,
    last_landed_at TIMESTAMPTZ
);

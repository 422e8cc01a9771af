-- Table: stream_releases. Grain: one row per request landed by the streaming path: the
-- release its landed rows come from, ordered by (watermark, run, revision). A release that
-- is not newer than the landed one is skipped, so batches landing out of order, and the
-- catch-up after a restart (which re-releases from an earlier watermark), never put an
-- older history over a newer one.
CREATE TABLE IF NOT EXISTS stream_releases (
    request_id VARCHAR PRIMARY KEY,
    watermark TIMESTAMPTZ NOT NULL,
    run INTEGER NOT NULL,
    revision INTEGER NOT NULL
);

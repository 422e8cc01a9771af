-- Table: quarantine_forwarded. Grain: one row per quarantine row the broker acknowledged on
-- the topic <prefix>removal.quarantine (connectors/quarantine_topic.py, a transactional
-- outbox): where it was written and when this was recorded. A quarantine row with no row
-- here is not forwarded yet. kafka_partition/kafka_offset are NULL, and refused says why,
-- for a row the producer or broker refused for good (larger than the topic's message limit):
-- it stays in DuckDB only and is not retried.
CREATE TABLE IF NOT EXISTS quarantine_forwarded (
    quarantine_id VARCHAR PRIMARY KEY,    -- quarantine.quarantine_id
    topic VARCHAR NOT NULL,               -- the Kafka topic, prefix included
    kafka_partition INTEGER,
    kafka_offset BIGINT,
    forwarded_at TIMESTAMPTZ NOT NULL,    -- when the acknowledgement was recorded
    refused VARCHAR                       -- NULL unless refused for good
);

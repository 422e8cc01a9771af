"""I/O at the edges: Avro codecs and files, Kafka, DuckDB."""

"""Benchmark support: a fast, calibrated workload generator and a batching Kafka publisher."""

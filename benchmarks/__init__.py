"""Benchmarks: answer latency, HTTP load, indexing time and index scale, written to results/."""

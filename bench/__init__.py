"""pvlm-bench: latency and throughput harness with same-run baselines."""

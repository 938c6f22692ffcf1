"""The benchmark harness behind `benchmarks/run.py`, one job per module."""

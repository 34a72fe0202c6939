"""Reproducible measurements; `python -m benchmarks.run` writes BENCHMARKS.md."""

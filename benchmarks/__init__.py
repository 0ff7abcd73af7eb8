"""Benchmarks: the side-by-side peer comparison (``python -m benchmarks.compare``)."""

"""The arms of the side-by-side comparison: baseline, genepool, GEPA and DSPy (see benchmarks/README.md)."""

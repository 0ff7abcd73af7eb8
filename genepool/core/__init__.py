"""Plain-Python logic of genepool (no Dagster imports): genome, benchmark, operators, selection."""

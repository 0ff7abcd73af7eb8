"""genepool: a self-improving optimiser for LLM agent prompts, built as a Dagster asset graph."""

__version__ = "0.1.0"

"""One optimisation generation as plain functions (no Dagster): the assets call these.

    traces -> failure_clusters -> mutated_population -> experiment_results -> pareto_front -> promoted_prompts

One module per step, each returning a frozen result type; the SQL is in ``genepool.store``. All
randomness comes from ``generation_rng(seed, agent, generation)`` and every LLM call goes through the
PostgreSQL cache and the step's budget, so re-running a partition gives byte-identical values and makes
no new LLM call. ``optimize`` chains generations without Dagster (the side-by-side benchmark).
"""

from __future__ import annotations

from genepool.steps.clusters import FailureClusters, find_failure_clusters
from genepool.steps.context import FingerprintMismatch, Generation, ensure_production
from genepool.steps.experiments import ExperimentResults, run_experiments
from genepool.steps.front import Front, FrontMember, Scores, select_front
from genepool.steps.loop import GenerationRun, OptimizeResult, optimize, run_generation
from genepool.steps.meter import Meter
from genepool.steps.population import Candidate, Parent, Population, mutate_population
from genepool.steps.promotion import Promotion, TestScore, promote
from genepool.steps.traces import TraceSet, collect_traces

__all__ = [
    "Candidate", "ExperimentResults", "FailureClusters", "FingerprintMismatch", "Front", "FrontMember", "Generation",
    "GenerationRun", "Meter", "OptimizeResult", "Parent", "Population", "Promotion", "Scores", "TestScore",
    "TraceSet", "collect_traces", "ensure_production", "find_failure_clusters", "mutate_population", "optimize",
    "promote", "run_experiments", "run_generation", "select_front",
]

"""The built-in agent types: their seed genome, benchmark file and pool of candidate instructions.

- ``support-desk`` (the default): a multi-task customer-support agent (sentiment, priority, order number,
  department, intent JSON). Generator: ``genepool.agents.support_desk``.
- ``critic``: a reviewer that says whether a proposed answer to a short question is correct.
  Generator: ``genepool.agents.critic``.

The specs live here and the generator modules are not imported by this package, so
``python -m genepool.agents.support_desk`` runs cleanly.

Seed genomes are deliberately plain, like a typical first prompt: a role line, no rules, no examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genepool.core.benchmark import Item, load_benchmark
from genepool.core.genome import Genome, Params

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_AGENT = "support-desk"


@dataclass(frozen=True)
class AgentSpec:
    agent_type: str
    description: str
    seed_genome: Genome
    benchmark_path: Path
    instruction_pool: tuple[str, ...]


SUPPORT_DESK_SEED = Genome(
    role="You are a helpful customer support assistant.",
    instructions=(),
    examples=(),
    params=Params(temperature=0.0, max_tokens=48, stop=()),
)

SUPPORT_DESK_INSTRUCTIONS: tuple[str, ...] = (
    "Answer with the label only, in lowercase.",
    "Reply with only the number.",
    "Output only a JSON object, no other text.",
    "Answer with exactly one word from the list given in the question.",
    "Do not explain your answer.",
    "Do not repeat the question.",
    "Never add greetings, apologies or punctuation to your answer.",
    "When asked for an order number, reply with the digits only, without '#'.",
    "When asked for JSON, use double quotes and the keys given in the question.",
    "Keep the answer on a single line.",
    "Be concise: the answer is usually one word.",
    "Read the whole message before answering.",
)

CRITIC_SEED = Genome(
    role="You are a reviewer who checks answers to questions.",
    instructions=(),
    examples=(),
    params=Params(temperature=0.0, max_tokens=32, stop=()),
)

CRITIC_INSTRUCTIONS: tuple[str, ...] = (
    "Answer with exactly one word: correct or incorrect.",
    "Reply in lowercase.",
    "Do not explain your verdict.",
    "Work out the right answer yourself, then compare it with the proposed answer.",
    "If the proposed answer differs from the right answer in any way, say incorrect.",
    "Do not repeat the question or the answer.",
    "Never add punctuation to your verdict.",
    "Keep the verdict on a single line.",
)

AGENTS: dict[str, AgentSpec] = {
    "support-desk": AgentSpec(
        agent_type="support-desk",
        description=(
            "Multi-task customer-support agent: classifies sentiment and priority, extracts order numbers, "
            "routes to a department and returns the intent as JSON."
        ),
        seed_genome=SUPPORT_DESK_SEED,
        benchmark_path=DATA_DIR / "support_desk.jsonl",
        instruction_pool=SUPPORT_DESK_INSTRUCTIONS,
    ),
    "critic": AgentSpec(
        agent_type="critic",
        description="Reviewer agent: judges whether a proposed answer to a short question is correct or incorrect.",
        seed_genome=CRITIC_SEED,
        benchmark_path=DATA_DIR / "critic.jsonl",
        instruction_pool=CRITIC_INSTRUCTIONS,
    ),
}


class AgentConfigError(ValueError):
    """A user agent definition that cannot be used; the message names the file, agent, field and fix."""


def load_agents_file(path: str | Path) -> dict[str, AgentSpec]:
    """User-defined agent types from a JSON file (``GENEPOOL_AGENTS_FILE``)::

        {"planner": {"description": "...", "benchmark": "planner.jsonl",
                     "seed_prompt": "You are a planner for {{ agent_type }}.",
                     "instructions": [], "instruction_pool": ["Answer with one step per line."],
                     "params": {"temperature": 0.0, "max_tokens": 64, "stop": []}}}

    ``seed_prompt`` is the Jinja2 role/system template (rendered with StrictUndefined); ``benchmark`` is a
    JSONL benchmark, relative to the file. Everything is validated before anything is used or stored.
    """
    import json
    import re

    from genepool.core.genome import GenomeError, render_check

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise AgentConfigError(f"{path}: file not found; set GENEPOOL_AGENTS_FILE to an existing JSON file") from None
    except json.JSONDecodeError as exc:
        raise AgentConfigError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise AgentConfigError(f"{path}: the top level must be an object of agent_type -> definition")
    out: dict[str, AgentSpec] = {}
    for name, d in raw.items():
        where = f"{path}: agent {name!r}"
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
            raise AgentConfigError(f"{where}: agent types are lowercase letters, digits, '-' and '_' (e.g. 'planner')")
        if not isinstance(d, dict):
            raise AgentConfigError(f"{where}: the definition must be an object")
        for field_name in ("benchmark", "seed_prompt"):
            if not isinstance(d.get(field_name), str) or not d[field_name].strip():
                raise AgentConfigError(f"{where}: field {field_name!r} is missing or empty; it is required")
        params = d.get("params") or {}
        try:
            genome = Genome(
                role=d["seed_prompt"],
                instructions=tuple(d.get("instructions", ())),
                params=Params(float(params.get("temperature", 0.0)), int(params.get("max_tokens", 48)),
                              tuple(params.get("stop", ()))),
            )
            render_check(genome)
        except GenomeError as exc:
            raise AgentConfigError(f"{where}: field 'seed_prompt': {exc}") from None
        except (TypeError, ValueError) as exc:
            raise AgentConfigError(f"{where}: field 'params': {exc}") from None
        bench = Path(d["benchmark"])
        bench = bench if bench.is_absolute() else (path.parent / bench)
        load_benchmark(bench)  # raises BenchmarkError naming the line and field
        out[name] = AgentSpec(name, str(d.get("description", "")), genome, bench.resolve(),
                              tuple(d.get("instruction_pool", ())))
    return out


def all_agents() -> dict[str, AgentSpec]:
    """The built-in agent types plus those of GENEPOOL_AGENTS_FILE (which may not redefine built-ins)."""
    import os

    agents = dict(AGENTS)
    extra = os.environ.get("GENEPOOL_AGENTS_FILE")
    if extra:
        for name, spec in load_agents_file(extra).items():
            if name in AGENTS:
                raise AgentConfigError(f"{extra}: agent {name!r} is built in; give your agent another name")
            agents[name] = spec
    return agents


def get_agent(agent_type: str) -> AgentSpec:
    """The spec of a known agent type; an unknown name raises ValueError listing the known ones."""
    agents = all_agents()
    try:
        return agents[agent_type]
    except KeyError:
        raise ValueError(
            f"agent_type={agent_type!r} is unknown; use one of {', '.join(sorted(agents))} "
            "(or define it in the JSON file named by GENEPOOL_AGENTS_FILE)"
        ) from None


def load_agent_benchmark(agent_type: str) -> list[Item]:
    """The validated benchmark items of an agent type."""
    return load_benchmark(get_agent(agent_type).benchmark_path)

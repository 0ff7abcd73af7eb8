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

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genepool.core.benchmark import BenchmarkError, Item, load_benchmark
from genepool.core.genome import Genome, Params
from genepool.validation import (
    MAX_AGENTS_FILE_BYTES,
    MAX_INSTRUCTION_CHARS,
    MAX_INSTRUCTIONS,
    params_problems,
    read_text_file,
    string_list_problems,
    text_problem,
)

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
    """A user agent definition that cannot be used; the message names the file, line, agent, field and fix."""


AGENT_FIELDS = ("description", "benchmark", "seed_prompt", "instructions", "instruction_pool", "params")
MAX_DESCRIPTION_CHARS = 2_000
MAX_POOL = 200
log = logging.getLogger(__name__)


def _line_of(text: str, name: str, field: str | None = None) -> int:
    """Best-effort line of an agent's key (and of one of its fields) in the JSON text, for error messages."""
    key = json.dumps(name)
    pos = text.find(key)
    if pos < 0:
        return 1
    if field is not None:
        fpos = text.find(json.dumps(field), pos + len(key))
        pos = fpos if fpos >= 0 else pos
    return text.count("\n", 0, pos) + 1


def _agent_spec(path: Path, text: str, name: str, d: Any) -> AgentSpec:
    """One user agent, validated completely; AgentConfigError (one line naming line, agent, field, fix) otherwise."""
    def fail(field: str | None, problem: str) -> AgentConfigError:
        line = _line_of(text, name, field)
        what = f" field {field!r}:" if field else ""
        return AgentConfigError(f"{path} line {line}: agent {name!r}:{what} {problem}")

    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
        raise fail(None, "agent types are 1-64 lowercase letters, digits, '-' and '_' (e.g. 'planner')")
    if not isinstance(d, dict):
        raise fail(None, f"the definition is {type(d).__name__}; it must be an object")
    unknown = sorted(set(d) - set(AGENT_FIELDS))
    if unknown:
        raise fail(unknown[0], f"unknown field(s) {unknown}; allowed are {', '.join(AGENT_FIELDS)}")
    for field in ("benchmark", "seed_prompt"):
        if not isinstance(d.get(field), str) or not d[field].strip():
            raise fail(field, "is missing or empty; it is required (a string)")
    problem = text_problem(d.get("description", ""), MAX_DESCRIPTION_CHARS)
    if problem:
        raise fail("description", problem)
    problem = text_problem(d["benchmark"], 4096, multiline=False)
    if problem:
        raise fail("benchmark", problem)
    for field, limit in (("instructions", MAX_INSTRUCTIONS), ("instruction_pool", MAX_POOL)):
        problems = string_list_problems(d.get(field, []), field, limit, MAX_INSTRUCTION_CHARS)
        if problems:
            raise fail(field, f"{problems[0][0]} {problems[0][1]}")
    params = d.get("params", {})
    problems = params_problems(params)
    if problems:
        raise fail("params", f"{problems[0][0]} {problems[0][1]}")
    genome = Genome(
        role=d["seed_prompt"],
        instructions=tuple(d.get("instructions", ())),
        params=Params(float(params.get("temperature", 0.0)), int(params.get("max_tokens", 48)),
                      tuple(params.get("stop", ()))),
    )
    from genepool.core.sanity import seed_problems

    problems = seed_problems(genome)
    if problems:
        field, problem = problems[0]
        field = "seed_prompt" if field == "role" else field
        raise fail(field.split("[")[0], f"{field} {problem}" if "[" in field else problem)
    bench = Path(d["benchmark"])
    bench = bench if bench.is_absolute() else (path.parent / bench)
    try:
        load_benchmark(bench)
    except BenchmarkError as exc:
        more = f" (and {len(exc.errors) - 1} more problem(s))" if len(exc.errors) > 1 else ""
        raise fail("benchmark", f"{exc.errors[0]}{more}") from None
    return AgentSpec(name, str(d.get("description", "")), genome, bench.resolve(), tuple(d.get("instruction_pool", ())))


def read_agents_file(path: str | Path) -> tuple[dict[str, AgentSpec], dict[str, str]]:
    """User agents of a JSON file as (usable specs, one-line error per broken agent).

    A broken agent never blocks the others; a file that cannot be read at all raises AgentConfigError.
    """
    path = Path(path)
    if not path.is_file():
        raise AgentConfigError(f"{path}: file not found; set GENEPOOL_AGENTS_FILE to an existing JSON file")
    text, problem = read_text_file(path, MAX_AGENTS_FILE_BYTES)
    if problem:
        raise AgentConfigError(f"{path}: {problem}")
    assert text is not None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgentConfigError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None
    except RecursionError:
        raise AgentConfigError(f"{path}: JSON nested too deeply; an agent definition is a flat object") from None
    if not isinstance(raw, dict):
        raise AgentConfigError(f"{path} line 1: the top level must be an object of agent_type -> definition")
    specs: dict[str, AgentSpec] = {}
    errors: dict[str, str] = {}
    for name, d in raw.items():
        try:
            if name in AGENTS:
                raise AgentConfigError(f"{path} line {_line_of(text, name)}: agent {name!r} is built in; "
                                       "give your agent another name")
            specs[name] = _agent_spec(path, text, name, d)
        except AgentConfigError as exc:
            errors[name] = str(exc)
    return specs, errors


def load_agents_file(path: str | Path) -> dict[str, AgentSpec]:
    """User-defined agent types from a JSON file (``GENEPOOL_AGENTS_FILE``), all or nothing::

        {"planner": {"description": "...", "benchmark": "planner.jsonl",
                     "seed_prompt": "You are a planner for {{ agent_type }}.",
                     "instructions": [], "instruction_pool": ["Answer with one step per line."],
                     "params": {"temperature": 0.0, "max_tokens": 64, "stop": []}}}

    ``seed_prompt`` is the role/system template (sandboxed Jinja2: text, ``{{ agent_type }}``, ``{{ today }}``,
    ``{% if %}``); ``benchmark`` is a JSONL benchmark, relative to the file. Everything is validated (types,
    ranges, sizes, encoding, control characters, the seed's sanity check) before anything is used or stored;
    the first broken agent raises AgentConfigError. ``all_agents`` instead skips broken agents.
    """
    specs, errors = read_agents_file(path)
    if errors:
        raise AgentConfigError(next(iter(errors.values())))
    return specs


def agents_file_errors() -> dict[str, str]:
    """One-line errors of the broken agents of GENEPOOL_AGENTS_FILE (``""`` for a file that cannot be read)."""
    extra = os.environ.get("GENEPOOL_AGENTS_FILE")
    if not extra:
        return {}
    try:
        return read_agents_file(extra)[1]
    except AgentConfigError as exc:
        return {"": str(exc)}


def all_agents() -> dict[str, AgentSpec]:
    """The built-in agent types plus the usable ones of GENEPOOL_AGENTS_FILE.

    A broken user agent (or an unreadable file) is logged and skipped, so it never blocks the other agents;
    ``get_agent`` of a broken agent raises its error.
    """
    agents = dict(AGENTS)
    extra = os.environ.get("GENEPOOL_AGENTS_FILE")
    if extra:
        try:
            specs, errors = read_agents_file(extra)
        except AgentConfigError as exc:
            log.warning("%s (user agents skipped)", exc)
            return agents
        for message in errors.values():
            log.warning("%s (agent skipped)", message)
        agents.update(specs)
    return agents


def get_agent(agent_type: str) -> AgentSpec:
    """The spec of a known agent type; a broken user agent raises AgentConfigError with its error, an unknown
    name raises ValueError listing the known ones."""
    agents = all_agents()
    if agent_type in agents:
        return agents[agent_type]
    errors = agents_file_errors()
    if agent_type in errors:
        raise AgentConfigError(errors[agent_type])
    if "" in errors:
        raise AgentConfigError(f"agent_type={agent_type!r} is unknown and the agents file is broken: {errors['']}")
    raise ValueError(
        f"agent_type={agent_type!r} is unknown; use one of {', '.join(sorted(agents))} "
        "(or define it in the JSON file named by GENEPOOL_AGENTS_FILE)"
    )


def load_agent_benchmark(agent_type: str) -> list[Item]:
    """The validated benchmark items of an agent type."""
    return load_benchmark(get_agent(agent_type).benchmark_path)

"""The structured prompt genome and how it becomes chat messages.

A genome is what evolution mutates: a role line, a list of instructions, few-shot examples and
decoding parameters. ``genome.content()`` is the Jinja2 template of the system message that is
stored in the registry; few-shot examples are rendered as user/assistant chat turns (or inline in
the system message when ``example_format == "inline"``), which matters a lot for small models.

``example_select = k > 0`` makes the examples a pool: each request shows only the ``k`` examples whose
input shares the most words with the user's input (Jaccard overlap of lower-cased word sets, ties by
pool order, the most similar last, next to the question), never one whose input *is* the user's input
(so a score on an item of the pool is not a lookup of its own answer). It is a pure function of the
genome and the input: the same request, and the same cache key, on every machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from genepool.core.sandbox import TemplateRefused, render_prompt
from genepool.validation import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    MAX_GENOME_CHARS,
    MAX_INSTRUCTION_CHARS,
    MAX_INSTRUCTIONS,
    MAX_RENDERED_CHARS,
    MAX_ROLE_CHARS,
    params_problems,
    text_problem,
)

# Variables a system template may use. ``today`` has a fixed default (a re-run must send the same
# prompt); ``agent_type`` is passed by whoever renders for an agent (runner, registry) and has no
# default, so a template that names it can never silently render another agent's name.
TEMPLATE_VARIABLES: dict[str, Any] = {"today": "2026-01-01"}
ALLOWED_VARIABLES: tuple[str, ...] = ("agent_type", "today")
# Dummy values of ``render_check`` (the syntax/sandbox check made before a genome is stored).
CHECK_VALUES: dict[str, Any] = {"agent_type": "agent", "today": "2026-01-01"}
EXAMPLE_FORMATS = ("turns", "inline")
_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def normalize_text(text: object) -> str:
    """``text`` with runs of whitespace as one space, lower-cased: how example inputs are compared."""
    return " ".join(str(text).split()).lower()


def select_problem(select: object) -> str | None:
    """What is wrong with an ``example_select`` value, or None."""
    if not isinstance(select, int) or isinstance(select, bool) or not 0 <= select <= MAX_EXAMPLES:
        return (f"is {select!r}; use an integer from 0 (show every example) to {MAX_EXAMPLES} "
                "(show that many nearest the input)")
    return None


def nearest_examples(examples: tuple[Example, ...], user_input: str, k: int) -> tuple[Example, ...]:
    """The ``k`` examples most similar to ``user_input`` (word-set Jaccard), least similar first, in a stable
    order; an example whose input equals ``user_input`` (whitespace and case aside) is never chosen."""
    target = _words(user_input)
    norm = normalize_text(user_input)
    scored = []
    for i, e in enumerate(examples):
        if normalize_text(e.input) == norm:
            continue
        w = _words(e.input)
        union = len(target | w)
        scored.append((-(len(target & w) / union if union else 0.0), i, e))
    scored.sort(key=lambda t: (t[0], t[1]))
    return tuple(e for _, _, e in reversed(scored[:k]))


class GenomeError(ValueError):
    """A genome or template that cannot be rendered; the message names the field and the fix."""


@dataclass(frozen=True)
class Example:
    input: str
    output: str


@dataclass(frozen=True)
class Params:
    temperature: float = 0.0
    max_tokens: int = 48
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Genome:
    role: str
    instructions: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    params: Params = field(default_factory=Params)
    example_format: str = "turns"  # "turns": chat turns; "inline": inside the system message
    example_select: int = 0  # 0: every example is shown; k > 0: the k nearest the input (turns only)

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["instructions"] = list(self.instructions)
        d["examples"] = [asdict(e) for e in self.examples]
        d["params"] = {**asdict(self.params), "stop": list(self.params.stop)}
        if not self.example_select:  # absent when 0: the JSON (and fingerprint) of every earlier genome is unchanged
            del d["example_select"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Genome:
        """A genome from its JSON form (a registry row, a file): every type checked, GenomeError naming the field."""
        if not isinstance(d, dict):
            raise GenomeError(f"genome: is {type(d).__name__}; a genome is an object with at least 'role'")
        if "role" not in d:
            raise GenomeError("genome is missing field 'role'; a genome needs at least 'role'")
        unknown = sorted(set(d) - {"role", "instructions", "examples", "params", "example_format", "example_select"})
        if unknown:
            raise GenomeError(f"genome: unknown field(s) {unknown}; allowed are role, instructions, examples, params, "
                              "example_format, example_select")
        if not isinstance(d["role"], str):
            raise GenomeError(f"role: is {type(d['role']).__name__}; write it as a string")
        instructions = d.get("instructions", [])
        if not isinstance(instructions, list) or not all(isinstance(i, str) for i in instructions):
            raise GenomeError("instructions: must be a list of strings, e.g. [\"Answer with one word.\"]")
        examples = d.get("examples", [])
        if not isinstance(examples, list):
            raise GenomeError("examples: must be a list of {\"input\": ..., \"output\": ...} objects")
        for i, e in enumerate(examples):
            if not isinstance(e, dict) or set(e) != {"input", "output"} or not all(
                isinstance(e[k], str) for k in ("input", "output")
            ):
                raise GenomeError(f"examples[{i}]: must be an object with string fields 'input' and 'output' only")
        params = d.get("params") if d.get("params") is not None else {}
        problems = params_problems(params)
        if problems:
            where, problem = problems[0]
            raise GenomeError(f"{where}: {problem}")
        example_format = d.get("example_format", "turns")
        if example_format not in EXAMPLE_FORMATS:
            raise GenomeError(f"example_format: is {example_format!r}; use one of {EXAMPLE_FORMATS}")
        select = d.get("example_select", 0)
        problem = select_problem(select)
        if problem:
            raise GenomeError(f"example_select: {problem}")
        return cls(
            role=d["role"],
            instructions=tuple(instructions),
            examples=tuple(Example(e["input"], e["output"]) for e in examples),
            params=Params(
                temperature=float(params.get("temperature", 0.0)),
                max_tokens=int(params.get("max_tokens", 48)),
                stop=tuple(params.get("stop", ())),
            ),
            example_format=example_format,
            example_select=select,
        )

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def with_(self, **changes: Any) -> Genome:
        return replace(self, **changes)

    # --- rendering ---------------------------------------------------------------------------
    def content(self) -> str:
        """The Jinja2 template of the system message (what the registry stores as ``content``).

        Role and instructions are template text; inline few-shot examples are literal text (their
        braces are escaped), because they come from traces and benchmark items, not from the author.
        """
        parts = [self.role.strip()]
        if self.instructions:
            parts.append("Rules:\n" + "\n".join(f"- {i.strip()}" for i in self.instructions))
        if self.examples and self.example_format == "inline":
            shots = "\n\n".join(f"Input: {literal(e.input)}\nOutput: {literal(e.output)}" for e in self.examples)
            parts.append("Examples:\n" + shots)
        return "\n\n".join(p for p in parts if p)

    def messages(self, user_input: str, variables: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """Chat messages for one request: system, few-shot turns, then the user's input.

        Pass ``variables={"agent_type": ...}`` when the template names the agent type; a template
        error raises GenomeError naming the field.
        """
        system = render_system(self, variables)
        msgs = [{"role": "system", "content": system}]
        if self.example_format == "turns":
            for e in self.shown_examples(user_input):
                msgs.append({"role": "user", "content": e.input})
                msgs.append({"role": "assistant", "content": e.output})
        msgs.append({"role": "user", "content": user_input})
        return msgs

    def shown_examples(self, user_input: str) -> tuple[Example, ...]:
        """The few-shot examples a request with ``user_input`` shows (all, or the ``example_select`` nearest)."""
        if self.example_select <= 0:
            return self.examples
        return nearest_examples(self.examples, user_input, self.example_select)


_MARKUP = re.compile(r"\{[{%#]")


def literal(text: str) -> str:
    """``text`` as template source that renders to exactly ``text`` (no tag or expression in it runs)."""
    return _MARKUP.sub(lambda m: "{{ '" + m.group(0) + "' }}", text)


def limit_problems(genome: Genome) -> list[tuple[str, str]]:
    """Size, count, character and parameter problems of a genome as (field, problem); checked before rendering."""
    out: list[tuple[str, str]] = []
    problem = text_problem(genome.role, MAX_ROLE_CHARS)
    if problem:
        out.append(("role", problem))
    if len(genome.instructions) > MAX_INSTRUCTIONS:
        out.append(("instructions", f"has {len(genome.instructions)} rules (max {MAX_INSTRUCTIONS}); drop some"))
    for i, text in enumerate(genome.instructions):
        problem = text_problem(text, MAX_INSTRUCTION_CHARS)
        if problem:
            out.append((f"instructions[{i}]", problem))
    if len(genome.examples) > MAX_EXAMPLES:
        out.append(("examples", f"has {len(genome.examples)} examples (max {MAX_EXAMPLES}); drop some"))
    for i, e in enumerate(genome.examples):
        for name in ("input", "output"):
            problem = text_problem(getattr(e, name), MAX_EXAMPLE_CHARS)
            if problem:
                out.append((f"examples[{i}].{name}", problem))
    p = genome.params
    out += params_problems({"temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop)})
    if genome.example_format not in EXAMPLE_FORMATS:
        out.append(("example_format", f"is {genome.example_format!r}; use one of {EXAMPLE_FORMATS}"))
    select = genome.example_select
    problem = select_problem(select)
    if problem:
        out.append(("example_select", problem))
    elif select and genome.example_format != "turns":
        out.append(("example_select", f"is {select} with example_format {genome.example_format!r}; nearest examples "
                    "are chosen per request as chat turns: set example_format 'turns' or example_select 0"))
    if not out:
        size = len(genome.canonical_json())
        if size > MAX_GENOME_CHARS:
            out.append(("genome", f"is {size:,} characters (max {MAX_GENOME_CHARS:,}); drop rules or examples"))
    return out


def _values(variables: dict[str, Any] | None) -> dict[str, Any]:
    return {**TEMPLATE_VARIABLES, **(variables or {})}


def render_template(template: str, variables: dict[str, Any] | None = None, *, field: str = "template",
                    max_source: int = MAX_GENOME_CHARS) -> str:
    """Render an (untrusted) system template in the sandbox; raise GenomeError naming ``field``."""
    try:
        return render_prompt(template, _values(variables), max_source=max_source, max_output=MAX_RENDERED_CHARS)
    except TemplateRefused as exc:
        raise GenomeError(f"{field}: {exc}") from None


def template_fields(genome: Genome) -> list[tuple[str, str, int]]:
    """(field, template source, size limit) of every genome field rendered as a template."""
    return [("role", genome.role, MAX_ROLE_CHARS)] + [
        (f"instructions[{i}]", t, MAX_INSTRUCTION_CHARS) for i, t in enumerate(genome.instructions)
    ]


def field_render_problems(genome: Genome, variables: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """Render each template field on its own (so an error names the field); (field, problem) for each failure."""
    out = []
    for name, source, limit in template_fields(genome):
        try:
            render_prompt(source, _values(variables), max_source=limit)
        except TemplateRefused as exc:
            out.append((name, str(exc)))
    return out


def render_system(genome: Genome, variables: dict[str, Any] | None = None) -> str:
    """The rendered system message; GenomeError with one line naming the field on any problem."""
    problems = limit_problems(genome)
    if problems:
        raise GenomeError(f"{problems[0][0]}: {problems[0][1]}")
    try:
        return render_template(genome.content(), variables)
    except GenomeError:
        problems = field_render_problems(genome, variables)
        if problems:
            raise GenomeError(f"{problems[0][0]}: {problems[0][1]}") from None
        raise


def render_check(genome: Genome) -> str:
    """Limits, then each field, then the whole system template with dummy variables. Returns the rendered text."""
    return render_system(genome, CHECK_VALUES)

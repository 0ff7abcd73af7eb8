"""The structured prompt genome and how it becomes chat messages.

A genome is what evolution mutates: a role line, a list of instructions, few-shot examples and
decoding parameters. ``genome.content()`` is the Jinja2 template of the system message that is
stored in the registry; few-shot examples are rendered as user/assistant chat turns (or inline in
the system message when ``example_format == "inline"``), which matters a lot for small models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import jinja2
from jinja2 import StrictUndefined

# Variables a system template may use; ``render_check`` renders with these dummy values.
TEMPLATE_VARIABLES: dict[str, Any] = {"agent_type": "support-desk", "today": "2026-01-01"}

_env = jinja2.Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


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

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["instructions"] = list(self.instructions)
        d["examples"] = [asdict(e) for e in self.examples]
        d["params"] = {**asdict(self.params), "stop": list(self.params.stop)}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genome:
        try:
            params = d.get("params") or {}
            return cls(
                role=str(d["role"]),
                instructions=tuple(str(i) for i in d.get("instructions", ())),
                examples=tuple(Example(str(e["input"]), str(e["output"])) for e in d.get("examples", ())),
                params=Params(
                    temperature=float(params.get("temperature", 0.0)),
                    max_tokens=int(params.get("max_tokens", 48)),
                    stop=tuple(str(s) for s in params.get("stop", ())),
                ),
                example_format=str(d.get("example_format", "turns")),
            )
        except KeyError as exc:
            raise GenomeError(f"genome is missing field {exc.args[0]!r}; a genome needs at least 'role'") from exc

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def with_(self, **changes: Any) -> Genome:
        return replace(self, **changes)

    # --- rendering ---------------------------------------------------------------------------
    def content(self) -> str:
        """The Jinja2 template of the system message (what the registry stores as ``content``)."""
        parts = [self.role.strip()]
        if self.instructions:
            parts.append("Rules:\n" + "\n".join(f"- {i.strip()}" for i in self.instructions))
        if self.examples and self.example_format == "inline":
            shots = "\n\n".join(f"Input: {e.input}\nOutput: {e.output}" for e in self.examples)
            parts.append("Examples:\n" + shots)
        return "\n\n".join(p for p in parts if p)

    def messages(self, user_input: str, variables: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """Chat messages for one request: system, few-shot turns, then the user's input."""
        system = render_template(self.content(), variables)
        msgs = [{"role": "system", "content": system}]
        if self.example_format == "turns":
            for e in self.examples:
                msgs.append({"role": "user", "content": e.input})
                msgs.append({"role": "assistant", "content": e.output})
        msgs.append({"role": "user", "content": user_input})
        return msgs


def render_template(template: str, variables: dict[str, Any] | None = None) -> str:
    """Render a system template with StrictUndefined; raise GenomeError naming the problem."""
    values = {**TEMPLATE_VARIABLES, **(variables or {})}
    try:
        return _env.from_string(template).render(**values)
    except jinja2.TemplateSyntaxError as exc:
        raise GenomeError(
            f"invalid Jinja2 template (line {exc.lineno}): {exc.message}; "
            "escape literal braces as {{ '{{' }} or fix the tag"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise GenomeError(
            f"template uses an undefined variable: {exc.message}; "
            f"allowed variables are {sorted(values)}"
        ) from exc


def render_check(genome: Genome) -> str:
    """Syntax check: render the system template with dummy variables. Returns the rendered text."""
    return render_template(genome.content())

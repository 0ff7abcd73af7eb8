"""Reject broken or unsafe children before they cost any evaluation.

``sanity_check`` never raises for a bad genome: it returns ``SanityResult(ok, reasons)`` with every
reason found, so the candidates table can record why a child was rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from genepool.core.genome import (
    CHECK_VALUES,
    Genome,
    GenomeError,
    field_render_problems,
    limit_problems,
    render_template,
)

INJECTION_PATTERNS: tuple[str, ...] = (
    r"\bignore\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier|preceding)?\s*(?:instructions|rules|prompts?)\b",
    r"\bdisregard\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?(?:previous\s+|prior\s+|above\s+)?(?:system\s+prompt|instructions|rules)\b",
    r"\bforget\s+(?:all\s+|everything\s+)?(?:your\s+|the\s+|previous\s+)*(?:instructions|rules)\b",
    r"\byou\s+are\s+now\s+(?:dan|jailbroken|unrestricted|free)\b",
    r"\bdo\s+anything\s+now\b",
    r"\bdeveloper\s+mode\b",
    r"\b(?:reveal|print|show|repeat)\s+(?:your\s+|the\s+)?(?:system\s+prompt|hidden\s+instructions)\b",
    r"\bjailbreak\b",
    r"\bno\s+(?:restrictions|rules\s+apply)\b",
)
_INJECTION = [re.compile(p, re.IGNORECASE) for p in INJECTION_PATTERNS]
MAX_INSTRUCTION_CHARS = 300
_MARKUP = re.compile(r"\{[{%#]")


def injection_phrase(text: str) -> str | None:
    """The first prompt-injection phrase found in ``text`` (see INJECTION_PATTERNS), or None."""
    for pat in _INJECTION:
        m = pat.search(text)
        if m:
            return m.group(0)
    return None


@dataclass(frozen=True)
class SanityResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower().rstrip(".")


def _letter_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def _repeated_tokens(text: str) -> str | None:
    words = re.findall(r"\w+", text.lower())
    run = 1
    for a, b in pairwise(words):
        run = run + 1 if a == b else 1
        if run >= 4:
            return a
    if len(words) >= 8:
        word, n = Counter(words).most_common(1)[0]
        if n / len(words) > 0.4:
            return word
    return None


def _instruction_problem(text: str) -> str | None:
    t = text.strip()
    if not t:
        return "is empty"
    if len(t) > MAX_INSTRUCTION_CHARS:
        return f"is {len(t)} characters long (max {MAX_INSTRUCTION_CHARS}); split it into short rules"
    if _letter_ratio(t) < 0.6:
        return "is mostly non-letters"
    if len(re.findall(r"[^\W\d_]+", t)) < 2:
        return "is not a sentence (fewer than two words)"
    rep = _repeated_tokens(t)
    if rep:
        return f"repeats the word {rep!r}"
    return None


def sanity_check(
    genome: Genome,
    *,
    max_chars: int = 4000,
    heldout_answers: Iterable[str] = frozenset(),
    judge: Callable[[Genome], Any] | None = None,
) -> SanityResult:
    """Check a genome; ``ok`` is False with reasons when any rule fails.

    Rejects: sizes, NUL/control characters and decoding parameters out of range (checked before anything is
    rendered; ``genepool.validation``), template fields that the sandbox refuses or that do not render
    (StrictUndefined; each reason names the field), template markup in few-shot examples, empty role,
    rendered prompt (with inline examples) over ``max_chars``, injection phrases, nonsense/drift (mostly non-letters,
    repeated tokens, instructions that are not sentences), duplicate instructions, few-shot examples
    whose input or output equals a held-out item's text (``heldout_answers``: held-out inputs and
    answers), held-out text quoted in an instruction. Never raises for a bad genome. ``judge`` (optional)
    is a model-based check: ``judge(genome)`` returns True/False, (ok, reason) or a SanityResult.
    """
    reasons: list[str] = []
    # Hard limits first (sizes, NUL/control characters, parameter ranges): nothing is rendered when one fails.
    hard = limit_problems(genome)
    reasons += [f"{where}: {problem}" for where, problem in hard]
    if hard:  # a 10 MB or binary field is not analysed any further
        return SanityResult(ok=False, reasons=reasons)
    rendered = genome.content()
    if not hard:
        # Each template field on its own in the sandbox (so the reason names the field), then the whole prompt.
        bad_fields = field_render_problems(genome, CHECK_VALUES)
        reasons += [f"{where}: {problem}" for where, problem in bad_fields]
        if not bad_fields:
            try:
                rendered = render_template(genome.content(), CHECK_VALUES, field="prompt")
            except GenomeError as exc:
                reasons.append(str(exc))
    for i, e in enumerate(genome.examples):
        for name in ("input", "output"):
            m = _MARKUP.search(getattr(e, name))
            if m:
                reasons.append(
                    f"examples[{i}].{name}: contains template markup {m.group(0)!r}; few-shot examples are literal "
                    "text from traces or the benchmark, so this one is not used"
                )

    if not genome.role.strip():
        reasons.append("role: empty; give the agent a one-line role such as 'You are a support-desk assistant.'")
    elif _letter_ratio(genome.role) < 0.6 or _repeated_tokens(genome.role):
        reasons.append("role: looks like nonsense (mostly non-letters or repeated words)")

    turns = genome.examples if genome.example_format == "turns" else ()
    sizes = sorted((len(e.input) + len(e.output) for e in turns), reverse=True)
    if genome.example_select:  # a pool: a request shows at most the example_select longest
        sizes = sizes[: genome.example_select]
    total = len(rendered) + sum(sizes)
    if total > max_chars:
        reasons.append(f"length: prompt is {total} characters, over max_chars={max_chars}; drop rules or examples")

    texts = [("role", genome.role)] + [(f"instructions[{i}]", t) for i, t in enumerate(genome.instructions)]
    texts += [(f"examples[{i}].{name}", getattr(e, name)) for i, e in enumerate(genome.examples)
              for name in ("input", "output")]
    for where, text in texts:
        if "\ufffd" in text:
            reasons.append(f"{where}: contains U+FFFD (text damaged by a NUL byte or a bad encoding); remove it")
        for pat in _INJECTION:
            m = pat.search(text)
            if m:
                reasons.append(f"{where}: injection phrase {m.group(0)!r}")
                break

    seen: dict[str, int] = {}
    for i, text in enumerate(genome.instructions):
        problem = _instruction_problem(text)
        if problem:
            reasons.append(f"instructions[{i}]: {problem}")
        key = _norm(text)
        if key in seen:
            reasons.append(f"instructions[{i}]: duplicates instructions[{seen[key]}]")
        else:
            seen[key] = i

    heldout = {_norm(h) for h in heldout_answers if str(h).strip()}
    seen_inputs: dict[str, int] = {}
    for i, e in enumerate(genome.examples):
        if not e.input.strip() or not e.output.strip():
            reasons.append(f"examples[{i}]: empty input or output")
        if _norm(e.input) in heldout:
            reasons.append(f"examples[{i}].input: equals a held-out item; use train items only")
        if len(_norm(e.output)) >= 12 and _norm(e.output) in heldout:
            reasons.append(f"examples[{i}].output: equals a held-out item; use train items only")
        k = _norm(e.input)
        if k in seen_inputs:
            reasons.append(f"examples[{i}]: duplicates examples[{seen_inputs[k]}]")
        else:
            seen_inputs[k] = i
    long_heldout = [h for h in heldout if len(h) >= 20]
    for i, text in enumerate(genome.instructions):
        low = _norm(text)
        if any(h in low for h in long_heldout):
            reasons.append(f"instructions[{i}]: quotes a held-out item")


    if judge is not None and not reasons:
        verdict = judge(genome)
        if isinstance(verdict, SanityResult):
            if not verdict.ok:
                reasons.extend(f"judge: {r}" for r in verdict.reasons or ["rejected"])
        elif isinstance(verdict, tuple):
            ok, why = verdict
            if not ok:
                reasons.append(f"judge: {why or 'rejected'}")
        elif not verdict:
            reasons.append("judge: rejected")
    return SanityResult(ok=not reasons, reasons=reasons)


class SeedRejected(GenomeError):
    """An agent's seed prompt that fails the sanity check; it never goes to production."""


def seed_problems(genome: Genome) -> list[tuple[str, str]]:
    """The sanity check of a seed genome as (field, problem) pairs; [] when it may go to production."""
    return [tuple(r.split(": ", 1)) if ": " in r else (r, "rejected") for r in sanity_check(genome).reasons]  # type: ignore[misc]


def check_seed(agent_type: str, genome: Genome) -> Genome:
    """Raise SeedRejected (one line naming the agent and field) unless the seed passes the same sanity check as
    every child; call it before a seed prompt is registered or put in production."""
    problems = seed_problems(genome)
    if problems:
        where, problem = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SeedRejected(f"seed prompt of agent {agent_type!r}: {where}: {problem}{more}; fix the agent definition")
    return genome

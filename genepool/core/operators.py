"""Variation operators over ``Genome``: pure functions, each returning a new genome.

Every operator takes a ``random.Random`` and draws from it in a fixed order, so the same seed and
inputs give the same child. An operator that cannot apply (nothing to remove, nothing new to add)
returns the genome unchanged; the breeder treats that as "draw again".

``reflect`` is the only operator that calls a model: it renders ``templates/reflect.j2`` in the bounded
sandbox (StrictUndefined) and parses the reply into instruction lists, dropping what it cannot parse. The
rules it returns are untrusted text: every child still goes through the sanity check, which refuses
template markup the sandbox will not render, so a bad (and cached) reply is a named rejection each re-run.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import jinja2

from genepool.core.clustering import FailureCluster
from genepool.core.genome import Example, Genome, Params
from genepool.core.sandbox import META_ENV, TemplateRefused, render_meta
from genepool.core.types import field_of

log = logging.getLogger(__name__)

TEMPERATURES = (0.0, 0.2, 0.5)
MAX_TOKENS = (8, 16, 32, 48, 96)
STOPS: tuple[tuple[str, ...], ...] = ((), ("\n",), ("\n\n",))
EXAMPLE_FORMATS = ("turns", "inline")
MAX_INSTRUCTIONS = 12
DEFAULT_MAX_EXAMPLES = 8

# Deterministic rephrasing rules: (regex, replacement). Applied one at a time; each must change the text.
REPHRASE_RULES: tuple[tuple[str, str], ...] = (
    (r"^Answer with\b(?!.*\bonly\b)", "Reply with only"),
    (r"^Answer with (?:the |a |one )?(\w+) only\b", r"Reply with only the \1"),
    (r"^Reply with only\b", "Answer with"),
    (r"^Respond with\b", "Answer with"),
    (r"^Reply with\b(?! only)", "Reply with only"),
    (r"^Do not\b", "Never"),
    (r"^Never\b", "Do not"),
    (r"^(?:Please|Kindly),? ", ""),
    (r"^You (?:must|should) ", ""),
    (r"^Make sure (?:to|that you) ", ""),
    (r"^Always ", ""),
    (r"\bthe label\b", "one label"),
    (r"\bone label\b", "the label"),
    (r",? no other words\.?$", ". Nothing else."),
    (r"\. Nothing else\.$", ", no other words."),
    (r"^(?!.*\b[Ee]xplain)(.*\S)$", r"\1 Do not explain."),
    (r" Do not explain\.$", ""),
)


def _sentence(text: str) -> str:
    """Tidy an instruction: single spaces, capital first letter, final punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?\"'":
        text += "."
    return text


def _dedupe(items: Sequence[Any], key=lambda x: x) -> tuple:
    seen: set = set()
    out = []
    for it in items:
        k = key(it)
        if k in seen:
            continue
        seen.add(k)
        out.append(it)
    return tuple(out)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower().rstrip(".")


# --- instructions ----------------------------------------------------------------------------------


def add_instruction(
    g: Genome, rng: random.Random, pool: Sequence[str] = (), clusters: Sequence[FailureCluster] = ()
) -> Genome:
    """Add one instruction the genome lacks: a hint of the largest failure clusters first, else from the pool.

    The cluster hints are tried in order of cluster size; the rng picks among the first two new hints
    (weighted 2:1 toward the largest) so that siblings do not all get the same rule. With no usable
    hint, a random new instruction of the agent's ``pool`` is added.
    """
    if len(g.instructions) >= MAX_INSTRUCTIONS:
        return g
    have = {_norm(i) for i in g.instructions}
    hints = _dedupe([_sentence(c.hint) for c in clusters if c.hint and _norm(c.hint) not in have], key=_norm)
    pool_new = _dedupe([_sentence(p) for p in pool if p and _norm(p) not in have], key=_norm)
    if hints:
        top = list(hints[:2])
        choice = rng.choices(top, weights=[2, 1][: len(top)])[0]
    elif pool_new:
        choice = rng.choice(pool_new)
    else:
        return g
    position = len(g.instructions) if not g.instructions else rng.randint(0, len(g.instructions))
    instructions = list(g.instructions)
    instructions.insert(position, choice)
    return g.with_(instructions=tuple(instructions))


def remove_instruction(g: Genome, rng: random.Random) -> Genome:
    """Remove one random instruction."""
    if not g.instructions:
        return g
    i = rng.randrange(len(g.instructions))
    return g.with_(instructions=g.instructions[:i] + g.instructions[i + 1 :])


def rephrase_options(text: str) -> list[str]:
    """All distinct rule-based rephrasings of one instruction (deterministic order)."""
    out = []
    text = _sentence(text)
    for pattern, repl in REPHRASE_RULES:
        new, n = re.subn(pattern, repl, text, count=1)
        new = _sentence(new)
        if n and new and _norm(new) != _norm(text) and len(new.split()) >= 2 and new not in out:
            out.append(new)
    return out


def rephrase_instruction(g: Genome, rng: random.Random) -> Genome:
    """Rewrite one instruction with the deterministic rephrasing table (no model involved)."""
    candidates = []
    have = {_norm(i) for i in g.instructions}
    for idx, text in enumerate(g.instructions):
        opts = [o for o in rephrase_options(text) if _norm(o) not in have]
        if opts:
            candidates.append((idx, opts))
    if not candidates:
        return g
    idx, opts = candidates[rng.randrange(len(candidates))]
    new = rng.choice(opts)
    instructions = list(g.instructions)
    instructions[idx] = new
    return g.with_(instructions=tuple(instructions))


# --- examples --------------------------------------------------------------------------------------


def _as_output(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _task_order(clusters: Sequence[FailureCluster], tasks: Sequence[str]) -> list[str]:
    """Tasks by number of failures (most first), then the others alphabetically."""
    failures: dict[str, int] = {}
    for c in clusters:
        for t in c.tasks:
            failures[t] = failures.get(t, 0) + c.count
    return sorted(set(tasks), key=lambda t: (-failures.get(t, 0), t))


def mine_examples(
    g: Genome,
    rng: random.Random,
    successes: Sequence[Any] = (),
    labelled: Sequence[Any] = (),
    k: int = 2,
    *,
    clusters: Sequence[FailureCluster] = (),
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    forbidden_inputs: frozenset[str] | set[str] = frozenset(),
) -> Genome:
    """Add up to ``k`` few-shot examples (at most ``max_examples`` in all), covering the most-failing tasks.

    Sources, in order of preference per task: successful traces (``input``/``output``; only those from
    the train split when the trace says its split) and labelled demonstrations of the TRAIN split
    (``input``/``expected``, e.g. benchmark ``Item``s). Inputs already in the genome or in
    ``forbidden_inputs`` (held-out items) are never used; no duplicates.
    """
    if k <= 0:
        raise ValueError(f"k={k} must be at least 1 (the number of examples to add)")
    room = min(k, max_examples - len(g.examples))
    if room <= 0:
        return g
    used = {_norm(e.input) for e in g.examples} | {_norm(x) for x in forbidden_inputs}
    by_task: dict[str, list[Example]] = {}
    pools: dict[str, list[list[Example]]] = {}

    def collect(rows: Sequence[Any], output_field: str, level: int) -> None:
        for r in rows:
            split = field_of(r, "split")
            if split not in (None, "train"):
                continue
            if output_field == "output" and field_of(r, "success") is False:
                continue
            inp, out = field_of(r, "input"), field_of(r, output_field)
            if inp is None or out is None or not str(inp).strip() or not _as_output(out).strip():
                continue
            task = str(field_of(r, "task") or "task")
            pools.setdefault(task, [[], []])[level].append(Example(str(inp), _as_output(out).strip()))

    collect(successes, "output", 0)
    collect(labelled, "expected", 1)
    for task, (succ, lab) in pools.items():
        # keep input order stable; shuffle within each source with the rng for variety between siblings
        succ = sorted(_dedupe(succ, key=lambda e: _norm(e.input)), key=lambda e: e.input)
        lab = sorted(_dedupe(lab, key=lambda e: _norm(e.input)), key=lambda e: e.input)
        rng.shuffle(succ)
        rng.shuffle(lab)
        by_task[task] = succ + lab
    added: list[Example] = []
    order = _task_order(clusters, list(by_task))
    while len(added) < room and any(by_task.values()):
        for task in order:
            while by_task[task]:
                ex = by_task[task].pop(0)
                if _norm(ex.input) not in used:
                    used.add(_norm(ex.input))
                    added.append(ex)
                    break
            if len(added) >= room:
                break
    if not added:
        return g
    return g.with_(examples=g.examples + tuple(added))


def drop_example(g: Genome, rng: random.Random) -> Genome:
    """Remove one random few-shot example."""
    if not g.examples:
        return g
    i = rng.randrange(len(g.examples))
    return g.with_(examples=g.examples[:i] + g.examples[i + 1 :])


# --- decoding parameters ---------------------------------------------------------------------------


def mutate_params(g: Genome, rng: random.Random) -> Genome:
    """Change one of temperature, max_tokens, stop or example_format to a different allowed value."""
    # a nearest-example pool is chosen per request as chat turns: its example_format stays "turns"
    field = rng.choice(("temperature", "max_tokens", "stop") + (() if g.example_select else ("example_format",)))
    p = g.params
    if field == "temperature":
        return g.with_(params=Params(rng.choice([t for t in TEMPERATURES if t != p.temperature]), p.max_tokens, p.stop))
    if field == "max_tokens":
        return g.with_(params=Params(p.temperature, rng.choice([m for m in MAX_TOKENS if m != p.max_tokens]), p.stop))
    if field == "stop":
        return g.with_(params=Params(p.temperature, p.max_tokens, rng.choice([s for s in STOPS if s != p.stop])))
    return g.with_(example_format=rng.choice([f for f in EXAMPLE_FORMATS if f != g.example_format]))


# --- crossover -------------------------------------------------------------------------------------


def _uniform(a: Sequence, b: Sequence, rng: random.Random, key) -> tuple[tuple, tuple]:
    """Uniform crossover of two ordered sets: shared genes go to both children, others by coin flip."""
    keys_a = {key(x) for x in a}
    keys_b = {key(x) for x in b}
    union = _dedupe(list(a) + list(b), key=key)  # order: a's order, then b's new genes
    c1, c2 = [], []
    for gene in union:
        k = key(gene)
        if k in keys_a and k in keys_b:
            c1.append(gene)
            c2.append(gene)
        elif rng.random() < 0.5:
            c1.append(gene)
        else:
            c2.append(gene)
    return tuple(c1), tuple(c2)


def crossover(g1: Genome, g2: Genome, rng: random.Random) -> tuple[Genome, Genome]:
    """Uniform crossover over instructions, examples and each decoding parameter; order stable, no duplicates."""
    i1, i2 = _uniform(g1.instructions, g2.instructions, rng, _norm)
    e1, e2 = _uniform(g1.examples, g2.examples, rng, lambda e: _norm(e.input))
    fields = {name: rng.random() < 0.5 for name in ("role", "temperature", "max_tokens", "stop", "example_format")}

    def pick(name: str, first: bool) -> Any:
        src = (g2 if fields[name] else g1) if first else (g1 if fields[name] else g2)
        if name in ("role", "example_format"):
            return getattr(src, name)
        return getattr(src.params, name)

    def child(first: bool, instr: tuple, ex: tuple) -> Genome:
        # the examples of a nearest-example pool parent stay a pool (never all shown at once)
        select = max(g1.example_select, g2.example_select)
        fixed = max([len(g.examples) for g in (g1, g2) if not g.example_select], default=-1)
        if select and len(ex) <= fixed and rng.random() < 0.5:
            select = 0
        return Genome(
            role=pick("role", first),
            instructions=instr,
            examples=ex,
            params=Params(pick("temperature", first), pick("max_tokens", first), pick("stop", first)),
            example_format="turns" if select else pick("example_format", first),
            example_select=min(select, max(len(ex) - 1, 0)) if select else 0,
        )

    return child(True, i1, e1), child(False, i2, e2)


# --- reflective mutation (model) -------------------------------------------------------------------

REFLECT_PARAMS = {"temperature": 0.0, "max_tokens": 160, "stop": []}
MAX_REFLECTION_CHARS = 20_000  # of a reflection reply that is parsed (the rest is ignored)


def reflect_source() -> str:
    return resources.files("genepool.core.templates").joinpath("reflect.j2").read_text(encoding="utf-8")


def reflect_template() -> jinja2.Template:
    """The meta-prompt as a template of the sandboxed, bounded environment (genepool.core.sandbox)."""
    return META_ENV.from_string(reflect_source())


# A worked example shown to the model as a user/assistant exchange before the real request: tiny
# models follow a demonstrated format far better than a described one.
REFLECT_SYSTEM = (
    "You improve the rules of an assistant's system prompt so that it makes fewer mistakes. "
    "Reply only with the numbered rule lists."
)
_DEMO_GENOME = Genome(role="You answer questions about train times.", instructions=("Be friendly.",))
_DEMO_CLUSTERS = [
    {
        "name": "times: right time but extra words around it",
        "share": 0.7,
        "example_messages": ["expected '14:05', got 'The train leaves at 14:05.'"],
        "hint": "Reply with only the time, as HH:MM.",
    },
    {"name": "times: wrong time", "share": 0.3, "example_messages": [], "hint": "Copy the time from the timetable."},
]
_DEMO_LISTS = (
    ("Reply with only the time, as HH:MM.", "Copy the time exactly from the timetable."),
    ("Answer with the time only.", "Do not add any other words."),
    ("Give only the departure time.", "Never explain.", "Check the timetable before answering."),
)


def _format_lists(lists: Sequence[Sequence[str]]) -> str:
    return "\n".join(f"PROMPT {i}:\n" + "\n".join(f"- {r}" for r in rules) for i, rules in enumerate(lists, 1))


def reflect_messages(g: Genome, clusters: Sequence[FailureCluster], n: int) -> list[dict[str, str]]:
    """The chat messages of the reflection meta-prompt (rendered with StrictUndefined).

    System, then a worked example (user request and the ideal answer) and the real request.
    """
    source = reflect_source()
    n_demo = min(n, len(_DEMO_LISTS))
    demo = render_meta(source, dict(
        role=_DEMO_GENOME.role, instructions=list(_DEMO_GENOME.instructions), clusters=_DEMO_CLUSTERS, n=n_demo
    ))
    prompt = render_meta(source, dict(
        role=g.role,
        instructions=list(g.instructions),
        clusters=[c.to_dict() for c in clusters[:5]],
        n=n,
    ))
    return [
        {"role": "system", "content": REFLECT_SYSTEM},
        {"role": "user", "content": demo},
        {"role": "assistant", "content": _format_lists(_DEMO_LISTS[:n_demo])},
        {"role": "user", "content": prompt},
    ]


def reflect_params(n: int) -> dict[str, Any]:
    """Greedy, bounded, and stopped after the n-th list."""
    return {**REFLECT_PARAMS, "stop": [f"PROMPT {n + 1}", "\n\n\n"]}


_HEADER = re.compile(
    r"^\s*(?:#+\s*)?\**\s*(?:prompt|version|list|option|rules?)\s*#?\s*(\d+)\s*\**\s*[:.)-]?\s*\**\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")
_PLACEHOLDERS = {"first rule", "second rule", "rule", "(no rules yet)", "no rules yet"}
_DEMO_RULES = {_norm(r) for rules in _DEMO_LISTS for r in rules} - {_norm("Never explain."), _norm("Do not explain.")}


def _valid_rule(text: str) -> bool:
    t = text.strip().strip('"').strip()
    words = t.split()
    if not (2 <= len(words) <= 40) or len(t) > 240:
        return False
    if _norm(t) in _PLACEHOLDERS or _norm(t) in _DEMO_RULES:
        return False
    letters = sum(ch.isalpha() for ch in t)
    return letters >= 0.6 * len(t.replace(" ", ""))


def parse_reflection(text: str, n: int) -> tuple[list[list[str]], list[str]]:
    """Parse a reflection reply into at most ``n`` instruction lists; also return why parts were dropped.

    Accepts a JSON list of lists, or 'PROMPT 1:' style headers followed by bullet/numbered lines,
    or a single bulleted list without headers.
    """
    problems: list[str] = []
    lists: list[list[str]] = []
    if not isinstance(text, str):
        return [], [f"reply is {type(text).__name__}, not text"]
    if len(text) > MAX_REFLECTION_CHARS:
        problems.append(f"reply is {len(text):,} characters; only the first {MAX_REFLECTION_CHARS:,} are read")
        text = text[:MAX_REFLECTION_CHARS]
    m = re.search(r"\[\s*\[.*\]\s*\]", text, re.DOTALL)
    if m:
        try:
            data = json.loads(m.group(0))
            lists = [[str(x) for x in item] for item in data if isinstance(item, list)]
        except json.JSONDecodeError:
            problems.append("a JSON-looking list did not parse")
    if not lists:
        headers = list(_HEADER.finditer(text))
        blocks = (
            [
                text[h.end() : (headers[i + 1].start() if i + 1 < len(headers) else len(text))]
                for i, h in enumerate(headers)
            ]
            if headers
            else [text]
        )
        if not headers:
            problems.append("no 'PROMPT <n>:' headers; read the reply as one list")
        for block in blocks:
            rules = [mm.group(1) for line in block.splitlines() if (mm := _BULLET.match(line))]
            lists.append(rules)
    out: list[list[str]] = []
    seen: set[str] = set()
    for i, rules in enumerate(lists):
        good = [_sentence(r.strip().strip('"')) for r in rules if _valid_rule(r)]
        good = list(_dedupe(good, key=_norm))
        if len(good) < len(rules):
            problems.append(f"list {i + 1}: dropped {len(rules) - len(good)} line(s) that are not rules or repeat one")
        if not good:
            problems.append(f"list {i + 1}: no usable rule")
            continue
        key = "\n".join(_norm(r) for r in good)
        if key in seen:
            problems.append(f"list {i + 1}: duplicate of an earlier list")
            continue
        seen.add(key)
        out.append(good[:MAX_INSTRUCTIONS])
    return out[:n], problems


def reflect(
    g: Genome,
    rng: random.Random,
    clusters: Sequence[FailureCluster],
    llm: Any,
    n: int = 2,
    *,
    partition_key: str | None = None,
    notes: list[str] | None = None,
) -> list[Genome]:
    """Ask ``llm`` for ``n`` improved instruction lists given the failure clusters; [] if unparsable.

    ``llm.chat(messages, params, purpose=, partition_key=)`` as ``genepool.llm.LLMClient``
    (greedy and cached, so a re-run is served from the cache and stays deterministic). Why a reply
    was (partly) unusable is appended to ``notes`` and logged. ``rng`` only orders the proposals.
    """
    if n <= 0:
        return []
    try:
        messages = reflect_messages(g, clusters, n)
    except TemplateRefused as exc:  # a parent or cluster text the meta-prompt cannot hold: no reflection
        msg = f"reflect: meta-prompt refused: {exc}"
        log.warning(msg)
        if notes is not None:
            notes.append(msg)
        return []
    try:
        completion = llm.chat(messages, reflect_params(n), purpose="reflect", partition_key=partition_key)
    except Exception as exc:  # a failed reflection must not stop breeding
        msg = f"reflect: model call failed: {exc}"
        log.warning(msg)
        if notes is not None:
            notes.append(msg)
        return []
    lists, problems = parse_reflection(completion.text, n)
    children = []
    for rules in lists:
        child = g.with_(instructions=tuple(rules))
        if child.fingerprint() != g.fingerprint():
            children.append(child)
    if not children:
        problems.append(f"reflect: unusable reply {completion.text[:160]!r}")
    for p in problems:
        log.info(p)
    if notes is not None:
        notes.extend(problems)
    rng.shuffle(children)
    return children

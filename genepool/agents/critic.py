"""The critic agent: a reviewer that judges whether a proposed answer to a short question is correct.

Output must be exactly ``correct`` or ``incorrect`` (exact_label). Four question domains (the item's
``task``): arithmetic, geography (capitals), units (conversions) and words (opposites), each balanced
between correct and incorrect proposals. Wrong proposals are plausible (off by a little, a capital of
another country, an unrelated word) so the verdict needs the answer, not a guess from the form.

``generate_critic(seed=11)`` is pure Python; ``python -m genepool.agents.critic`` rewrites
``data/critic.jsonl`` byte for byte.

Baseline (real SmolLM2-135M, greedy, strict accuracy on the 24 validation items): seed 0.0% (the verdict
is wrapped in prose or both labels are mentioned); 2 few-shot turns per domain + stop ["\\n"] 45.8%
(always a bare label, but the verdicts are close to chance: the tiny model barely checks the answer).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from genepool.agents import DATA_DIR
from genepool.agents.support_desk import assign_splits
from genepool.core.benchmark import Item, write_benchmark

DATA_PATH = DATA_DIR / "critic.jsonl"
ITEMS_PER_TASK = 24
LABELS = ["correct", "incorrect"]

CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
    ("Greece", "Athens"), ("Russia", "Moscow"), ("China", "Beijing"), ("Portugal", "Lisbon"),
    ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"),
)
OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("open", "closed"),
    ("light", "dark"), ("early", "late"), ("full", "empty"), ("strong", "weak"), ("old", "new"),
    ("wet", "dry"), ("high", "low"), ("loud", "quiet"), ("hard", "soft"), ("rich", "poor"),
)
UNITS = (
    ("How many minutes are in {x} hours?", 60),
    ("How many centimetres are in {x} metres?", 100),
    ("How many grams are in {x} kilograms?", 1000),
    ("How many days are in {x} weeks?", 7),
    ("How many seconds are in {x} minutes?", 60),
    ("How many months are in {x} years?", 12),
)

PROMPT = "Is the proposed answer correct or incorrect? Question: {q} Proposed answer: {a}"


def _arithmetic(rng: random.Random, right: bool) -> tuple[str, str]:
    op = rng.choice("+-x")
    a, b = rng.randint(2, 20), rng.randint(2, 12)
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "x": a * b}[op]
    shown = value if right else value + rng.choice((-2, -1, 1, 2, 10))
    return f"What is {a} {op} {b}?", str(shown)


def _geography(rng: random.Random, right: bool) -> tuple[str, str]:
    country, capital = rng.choice(CAPITALS)
    if not right:
        capital = rng.choice([c for k, c in CAPITALS if k != country])
    return f"What is the capital of {country}?", capital


def _units(rng: random.Random, right: bool) -> tuple[str, str]:
    template, factor = rng.choice(UNITS)
    x = rng.randint(2, 9)
    value = x * factor
    shown = value if right else rng.choice((value + factor, value - factor, x * 10 if factor != 10 else x * 100))
    return template.format(x=x), str(shown)


def _words(rng: random.Random, right: bool) -> tuple[str, str]:
    word, opposite = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    if not right:
        others = [w for pair in OPPOSITES for w in pair if w not in (word, opposite)]
        opposite = rng.choice(others)
    return f"What is the opposite of {word}?", opposite


DOMAINS = {"arithmetic": _arithmetic, "geography": _geography, "units": _units, "words": _words}


def generate_critic(seed: int = 11, items_per_task: int = ITEMS_PER_TASK) -> list[Item]:
    """The critic benchmark: 4 domains x ``items_per_task`` items, half correct, splits stratified by domain."""
    rng = random.Random(seed)
    used: set[str] = set()
    items: list[Item] = []
    for task, make in DOMAINS.items():
        rows = []
        i = 0
        while len(rows) < items_per_task:
            right = i % 2 == 0
            q, a = make(rng, right)
            text = PROMPT.format(q=q, a=a)
            if text not in used:
                used.add(text)
                rows.append((text, LABELS[0] if right else LABELS[1]))
                i += 1
        rng.shuffle(rows)
        splits = assign_splits(rng, len(rows))
        for k, ((text, label), split) in enumerate(zip(rows, splits, strict=True), start=1):
            items.append(
                Item(
                    id=f"cr-{task}-{k:03d}",
                    input=text,
                    expected=label,
                    checker="exact_label",
                    split=split,
                    task=task,
                    checker_args={"labels": list(LABELS)},
                )
            )
    return items


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DATA_PATH
    items = generate_critic()
    write_benchmark(items, path)
    print(f"wrote {len(items)} items to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

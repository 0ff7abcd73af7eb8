"""The support-desk agent: a multi-task customer-support assistant, and its seeded benchmark generator.

Five tasks, each item's input naming the task and its allowed answers:

- ``sentiment``   exact_label  positive | negative | neutral
- ``priority``    exact_label  low | medium | high
- ``order_id``    numeric      the order number in the message (other numbers are distractors)
- ``department``  exact_label  billing | shipping | technical | account
- ``intent_json`` json_schema  {"intent": refund|cancel|exchange|track, "order_id": <int>}

``generate_support_desk(seed=7)`` is pure Python (``random.Random``), so the committed file
``data/support_desk.jsonl`` is reproducible byte for byte: ``python -m genepool.agents.support_desk``.

Baseline (``benchmarks/measure_baseline.py``, real SmolLM2-135M-Instruct Q4_1, greedy, strict accuracy
on the 60 validation items; per task: department / intent_json / order_id / priority / sentiment):

- (a) seed genome:                         0.0%  (0 / 0 / 0 / 0 / 0)  -- right answers wrapped in prose
- (b) seed + 4 format rules:               0.0%  (0 / 0 / 0 / 0 / 0)  -- rules are ignored
- (c) seed + 2 few-shot turns per task:   46.7%  (25 / 50 / 67 / 42 / 50)
- (d) (c) + stop ["\\n"], max_tokens 32:    46.7%  (same outputs, fewer tokens)
- (e) rules + (d):                        43.3%
- (d) with 3 few-shot turns per task:    38.3%  (50 / 42 / 42 / 33 / 25) -- more shots crowd the context

So the seed is clearly improvable by structure (examples as chat turns), not by wording.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from genepool.agents import DATA_DIR
from genepool.core.benchmark import Item, write_benchmark

DATA_PATH = DATA_DIR / "support_desk.jsonl"
ITEMS_PER_TASK = 48
SPLIT_FRACTIONS = (("train", 0.40), ("validation", 0.25), ("test", 0.35))

PRODUCTS = (
    "headphones", "coffee maker", "desk lamp", "backpack", "phone case", "blender", "keyboard",
    "office chair", "water bottle", "rain jacket", "smart watch", "toaster", "yoga mat", "monitor",
    "kettle", "charger", "sneakers", "tablet stand",
)
AGENT_NAMES = ("Maria", "Tom", "Aisha", "Lukas", "Priya", "Ben", "Sofia", "Kenji")
COUNTRIES = ("Canada", "Norway", "Mexico", "Ireland", "Japan", "Portugal")
COLOURS = ("black", "white", "red", "navy blue", "green")

SENTIMENT = {
    "positive": (
        "I love my new {product}, it works perfectly!",
        "Thanks, {name} fixed my problem in minutes. Great job!",
        "The {product} arrived early and looks amazing.",
        "Fantastic service, I will definitely order again.",
        "{name} was super helpful and friendly, thank you so much!",
        "Best {product} I have ever owned, I am really happy with it.",
        "Wow, the refund came through in one day. Excellent support!",
    ),
    "negative": (
        "My {product} broke after two days and nobody answers my emails.",
        "This is the worst service I have ever had.",
        "The {product} arrived damaged and I am very disappointed.",
        "I am furious, you charged me twice for the {product}.",
        "{name} was rude and did not solve anything.",
        "Terrible quality, the {product} stopped working after one use.",
        "I have waited three weeks and I am fed up with your excuses.",
    ),
    "neutral": (
        "What are your opening hours on Saturday?",
        "I would like to change the delivery address for my {product}.",
        "Do you ship the {product} to {country}?",
        "Please send me the invoice for my last order.",
        "Is the {product} available in {colour}?",
        "How long does standard delivery to {country} take?",
        "Can I pay for the {product} by bank transfer?",
    ),
}

PRIORITY = {
    "high": (
        "Someone logged into my account and changed my password, please help now!",
        "The {product} started smoking when I plugged it in.",
        "Our whole team has been unable to log in since this morning.",
        "You charged my card {k} times and my account is now overdrawn.",
        "The {product} gave me an electric shock, this is dangerous.",
        "Your checkout is down and none of our customers can pay.",
        "I see payments on my account that I never made.",
    ),
    "medium": (
        "My {product} is a week late, can you check on it?",
        "The app crashes when I open my order history.",
        "I received the {product} in the wrong colour.",
        "The tracking page for my {product} has not updated in {k} days.",
        "One of the buttons on my {product} is stuck.",
        "My discount code was not applied to the {product}.",
        "The invoice for my {product} shows the wrong address.",
    ),
    "low": (
        "Could you add a dark mode to the app some day?",
        "How do I unsubscribe from the newsletter?",
        "Just a suggestion: the {product} box could be smaller.",
        "Do you plan to sell the {product} in {colour} next year?",
        "No rush, but where can I find the user manual for the {product}?",
        "Small idea: a wish list feature would be nice.",
        "Out of curiosity, where is the {product} made?",
    ),
}

DEPARTMENT = {
    "billing": (
        "I was charged twice for my {product}.",
        "My refund for the {product} has not reached my card yet.",
        "The invoice shows the wrong VAT amount.",
        "My credit card was declined although it has funds.",
        "Why was I billed {k} euros more than the price of the {product}?",
        "Can I get a receipt for my payment last month?",
    ),
    "shipping": (
        "My {product} has not arrived yet.",
        "The courier delivered my {product} to the wrong house.",
        "The tracking number for my {product} does not work.",
        "Can you deliver the {product} to {country} instead?",
        "The parcel with my {product} has been stuck in transit for {k} days.",
        "The box with the {product} arrived crushed by the courier.",
    ),
    "technical": (
        "The app crashes every time I open it.",
        "My {product} will not connect to Wi-Fi.",
        "The website shows error 500 when I try to check out.",
        "The firmware update bricked my {product}.",
        "My {product} does not turn on even when charged.",
        "The {product} app freezes on the loading screen.",
    ),
    "account": (
        "I want to change the email address on my profile.",
        "Please delete my account and all my data.",
        "I forgot my password and the reset link has expired.",
        "How do I change the name on my account?",
        "My account is locked after {k} wrong login attempts.",
        "I would like to merge my two customer accounts.",
    ),
}

ORDER_TEMPLATES = (
    "Order #{n} never arrived.",
    "I ordered {q} items in order {n} but only got {q2}.",
    "My order number is {n} and the tracking link is broken.",
    "Where is order {n}? It has been {k} days.",
    "Please cancel order #{n}, I placed it by mistake.",
    "Hi, this is about order {n}: the {product} is missing a part.",
    "I paid {price} dollars for order #{n} and was charged twice.",
    "Order no. {n} arrived, but the {product} is the wrong size.",
    "Can you tell me when order {n} will ship? I need it within {k} days.",
    "The {product} from order #{n} is scratched.",
)

INTENT = {
    "refund": (
        "I want my money back for order {n}, the {product} is broken.",
        "Please refund order #{n}, I returned the {product} last week.",
        "Order {n} was damaged, I would like a refund.",
        "Give me a refund for order {n}, the {product} never worked.",
    ),
    "cancel": (
        "Please cancel order {n}, I no longer need it.",
        "I want to cancel order #{n} before it ships.",
        "Cancel my order {n}, I ordered the {product} by mistake.",
        "Stop order {n} please, I changed my mind about the {product}.",
    ),
    "exchange": (
        "Can I swap the {product} in order {n} for a bigger size?",
        "I would like to exchange the {product} from order #{n} for the {colour} one.",
        "Order {n}: please exchange the {product} for a different model.",
        "The {product} in order {n} is too small, can I exchange it?",
    ),
    "track": (
        "Where is my order {n}? I want to know when it arrives.",
        "Can you track order #{n} for me?",
        "What is the delivery status of order {n}?",
        "When will order {n} with my {product} arrive?",
    ),
}

INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": sorted(INTENT)},
        "order_id": {"type": "integer"},
    },
    "required": ["intent", "order_id"],
    "additionalProperties": False,
}

PROMPTS = {
    "sentiment": "Classify the sentiment (positive, negative or neutral) of this message: {msg}",
    "priority": "Rate the priority (low, medium or high) of this support ticket: {msg}",
    "order_id": "Extract the order number from this message: {msg}",
    "department": "Which department should handle this message (billing, shipping, technical or account)? {msg}",
    "intent_json": (
        'Return a JSON object with keys "intent" (refund, cancel, exchange or track) and "order_id" '
        "(a number) for this message: {msg}"
    ),
}


def _fill(rng: random.Random, template: str, order_no: int | None = None) -> str:
    q = rng.randint(2, 6)
    slots = {
        "product": rng.choice(PRODUCTS),
        "name": rng.choice(AGENT_NAMES),
        "country": rng.choice(COUNTRIES),
        "colour": rng.choice(COLOURS),
        "k": rng.randint(2, 9),
        "q": q,
        "q2": rng.randint(1, q - 1),
        "price": rng.choice((19, 25, 49, 79, 120, 250)),
        "n": order_no if order_no is not None else rng.randint(10000, 99999),
    }
    return template.format(**slots)


def _labelled(rng: random.Random, task: str, table: dict[str, tuple[str, ...]], n: int, used: set[str]) -> list:
    """n (input, expected, checker_args) rows with labels balanced round-robin and unique inputs."""
    labels = list(table)
    rows = []
    i = 0
    while len(rows) < n:
        label = labels[i % len(labels)]
        msg = _fill(rng, rng.choice(table[label]))
        text = PROMPTS[task].format(msg=msg)
        if text not in used:
            used.add(text)
            rows.append((text, label, {"labels": labels}))
            i += 1
    return rows


def _order_rows(rng: random.Random, n: int, used: set[str]) -> list:
    rows = []
    i = 0
    while len(rows) < n:
        order_no = rng.randint(10000, 99999)
        msg = _fill(rng, ORDER_TEMPLATES[i % len(ORDER_TEMPLATES)], order_no)
        text = PROMPTS["order_id"].format(msg=msg)
        if text not in used:
            used.add(text)
            rows.append((text, str(order_no), {}))
            i += 1
    return rows


def _intent_rows(rng: random.Random, n: int, used: set[str]) -> list:
    labels = sorted(INTENT)
    rows = []
    i = 0
    while len(rows) < n:
        intent = labels[i % len(labels)]
        order_no = rng.randint(10000, 99999)
        msg = _fill(rng, rng.choice(INTENT[intent]), order_no)
        text = PROMPTS["intent_json"].format(msg=msg)
        if text not in used:
            used.add(text)
            expected = json.dumps({"intent": intent, "order_id": order_no})
            rows.append((text, expected, {"schema": INTENT_SCHEMA}))
            i += 1
    return rows


def assign_splits(rng: random.Random, n: int, fractions=SPLIT_FRACTIONS) -> list[str]:
    """A shuffled list of n split names in the given proportions (largest-remainder rounding)."""
    raw = [(name, frac * n) for name, frac in fractions]
    counts = {name: int(x) for name, x in raw}
    left = n - sum(counts.values())
    for name, _x in sorted(raw, key=lambda r: r[1] - int(r[1]), reverse=True)[:left]:
        counts[name] += 1
    splits = [name for name, _ in fractions for _ in range(counts[name])]
    rng.shuffle(splits)
    return splits


def generate_support_desk(seed: int = 7, items_per_task: int = ITEMS_PER_TASK) -> list[Item]:
    """The support-desk benchmark: 5 tasks x ``items_per_task`` items, splits stratified by task."""
    rng = random.Random(seed)
    used: set[str] = set()
    tasks = {
        "sentiment": ("exact_label", _labelled(rng, "sentiment", SENTIMENT, items_per_task, used)),
        "priority": ("exact_label", _labelled(rng, "priority", PRIORITY, items_per_task, used)),
        "order_id": ("numeric", _order_rows(rng, items_per_task, used)),
        "department": ("exact_label", _labelled(rng, "department", DEPARTMENT, items_per_task, used)),
        "intent_json": ("json_schema", _intent_rows(rng, items_per_task, used)),
    }
    items: list[Item] = []
    for task, (checker, rows) in tasks.items():
        rng.shuffle(rows)
        splits = assign_splits(rng, len(rows))
        for k, ((text, expected, args), split) in enumerate(zip(rows, splits, strict=True), start=1):
            items.append(
                Item(
                    id=f"sd-{task}-{k:03d}",
                    input=text,
                    expected=expected,
                    checker=checker,
                    split=split,
                    task=task,
                    checker_args=args,
                )
            )
    return items


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DATA_PATH
    items = generate_support_desk()
    write_benchmark(items, path)
    print(f"wrote {len(items)} items to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

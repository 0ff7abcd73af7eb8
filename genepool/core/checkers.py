"""Strict output checkers, each returning a success flag, a score, a message and a failure signature.

Strictness is the point: the optimiser has to discover prompts that make a small model answer in the
exact format. ``success`` is strict (the whole output is the answer). ``score`` gives partial credit
(0.5) when the right answer is present but surrounded by other text, so a format failure ranks above
a wrong answer. ``signature`` is a short, stable code that clusters failures by mode:

==========================  ====================================================================
signature                   meaning
==========================  ====================================================================
ok                          success
empty_output                nothing but whitespace
too_long                    longer than ``checker_args.max_chars``
wrong_label                 a different allowed label (alone or within text)
label_with_extra_text       the right label, surrounded by other words (a FORMAT failure)
multiple_labels             the right label and another allowed label both appear
label_not_in_set            no allowed label appears at all
no_number                   no number in the output
wrong_number                a number, but not the expected one
number_with_extra_text      the expected number, surrounded by other text (a FORMAT failure)
not_json                    no JSON object can be parsed from the output
json_with_extra_text        a JSON object is inside the output, with other text (or a fence) around it
json_not_object             valid JSON, but not an object
json_missing_key:<k>        a required/expected key is absent
json_wrong_value:<k>        key present, value wrong (or violates the schema)
json_extra_key:<k>          a key the schema does not allow
json_schema_violation       any other schema error
regex_no_match              the stripped output does not fully match the pattern
==========================  ====================================================================
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genepool.core.benchmark import Item


@dataclass(frozen=True)
class CheckResult:
    success: bool
    score: float
    message: str
    signature: str


FORMAT_CREDIT = 0.5  # score for the right answer in the wrong format

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _show(text: str, limit: int = 80) -> str:
    t = text.strip().replace("\n", "\\n")
    return repr(t if len(t) <= limit else t[: limit - 3] + "...")


def _normalise(text: str) -> str:
    """Strip whitespace and one trailing period."""
    t = text.strip()
    if t.endswith("."):
        t = t[:-1].rstrip()
    return t


def _ok(message: str) -> CheckResult:
    return CheckResult(True, 1.0, message, "ok")


def _fail(signature: str, message: str, score: float = 0.0) -> CheckResult:
    return CheckResult(False, score, message, signature)


def _contains_word(haystack: str, word: str) -> bool:
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", haystack, re.IGNORECASE) is not None


# --- exact_label --------------------------------------------------------------------------------


def check_exact_label(output: str, item: Item) -> CheckResult:
    expected = item.expected.strip().lower()
    labels = [x.strip().lower() for x in item.checker_args.get("labels", [])]
    got = _normalise(output).lower()
    if got == expected:
        return _ok(f"label {expected!r}")
    if got in labels:
        return _fail("wrong_label", f"expected label {expected!r}, got {got!r}")
    # longest labels first so 'incorrect' is not also counted as 'correct'
    present = []
    scrubbed = got
    for lab in sorted(set(labels) | {expected}, key=len, reverse=True):
        if _contains_word(scrubbed, lab):
            present.append(lab)
            scrubbed = re.sub(r"(?<![A-Za-z0-9_])" + re.escape(lab) + r"(?![A-Za-z0-9_])", " ", scrubbed)
    if expected in present and len(present) == 1:
        return _fail(
            "label_with_extra_text",
            f"expected label {expected!r}, got {_show(output)} (right label, extra text)",
            FORMAT_CREDIT,
        )
    if expected in present:
        others = sorted(p for p in present if p != expected)
        return _fail(
            "multiple_labels", f"expected label {expected!r}, got {_show(output)} (also mentions {', '.join(others)})"
        )
    if present:
        return _fail("wrong_label", f"expected label {expected!r}, got {_show(output)} (mentions {present[0]!r})")
    if labels:
        return _fail(
            "label_not_in_set",
            f"expected label {expected!r}, got {_show(output)}, which contains none of {', '.join(labels)}",
        )
    return _fail("wrong_label", f"expected label {expected!r}, got {_show(output)}")


# --- numeric ------------------------------------------------------------------------------------


def _to_float(text: str) -> float | None:
    try:
        v = float(text.replace(",", ""))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def check_numeric(output: str, item: Item) -> CheckResult:
    expected = float(item.expected)
    tol = float(item.checker_args.get("tolerance", 0))
    got = _normalise(output)

    def same(v: float) -> bool:
        return abs(v - expected) <= tol + 1e-9 * max(1.0, abs(expected))

    whole = _to_float(got) if re.fullmatch(r"[-+]?[\d,]*\.?\d+", got) else None
    if whole is not None:
        if same(whole):
            return _ok(f"number {item.expected}")
        return _fail("wrong_number", f"expected number {item.expected}, got {got}")
    found = [v for v in (_to_float(m.group()) for m in _NUMBER_RE.finditer(got)) if v is not None]
    if not found:
        return _fail("no_number", f"expected number {item.expected}, got {_show(output)} (no number)")
    if any(same(v) for v in found):
        return _fail(
            "number_with_extra_text",
            f"expected number {item.expected}, got {_show(output)} (right number, extra text)",
            FORMAT_CREDIT,
        )
    return _fail("wrong_number", f"expected number {item.expected}, got {_show(output)}")


# --- regex --------------------------------------------------------------------------------------


def check_regex(output: str, item: Item) -> CheckResult:
    pattern = item.checker_args["pattern"]
    flags = re.IGNORECASE if item.checker_args.get("ignore_case") else 0
    got = output.strip()
    if re.fullmatch(pattern, got, flags):
        return _ok(f"matches /{pattern}/")
    return _fail("regex_no_match", f"expected output matching /{pattern}/, got {_show(output)}")


# --- json_schema --------------------------------------------------------------------------------


def _find_embedded_object(text: str) -> dict | None:
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _schema_signature(error: Any) -> str:
    """Map a jsonschema ValidationError to a failure signature."""
    if error.validator == "required":
        m = re.match(r"'([^']+)' is a required property", error.message)
        return f"json_missing_key:{m.group(1) if m else '?'}"
    if error.validator == "additionalProperties":
        m = re.search(r"\('([^']+)'", error.message)
        return f"json_extra_key:{m.group(1) if m else '?'}"
    if error.path:
        return f"json_wrong_value:{error.path[0]}"
    return "json_schema_violation"


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()
    return a == b


def _judge_object(obj: dict, item: Item) -> tuple[str, str, float]:
    """(signature, detail, fraction of expected keys right) for a parsed object."""
    import jsonschema

    schema = item.checker_args["schema"]
    expected = json.loads(item.expected) if item.expected.strip() else {}
    right = sum(1 for k, v in expected.items() if k in obj and _values_equal(obj[k], v))
    frac = right / len(expected) if expected else 1.0
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(e.path), e.validator))
    if errors:
        return _schema_signature(errors[0]), errors[0].message, frac
    for k, v in expected.items():
        if k not in obj:
            return f"json_missing_key:{k}", f"key {k!r} is missing", frac
        if not _values_equal(obj[k], v):
            return f"json_wrong_value:{k}", f"{k!r} is {obj[k]!r}, expected {v!r}", frac
    return "ok", "", frac


def check_json_schema(output: str, item: Item) -> CheckResult:
    got = output.strip()
    try:
        obj = json.loads(got)
    except json.JSONDecodeError:
        embedded = _find_embedded_object(got)
        if embedded is None:
            return _fail("not_json", f"expected a JSON object, got {_show(output)} (not JSON)")
        sig, detail, frac = _judge_object(embedded, item)
        if sig == "ok":
            return _fail(
                "json_with_extra_text",
                f"expected only a JSON object, got {_show(output)} (right object, extra text or fence)",
                FORMAT_CREDIT,
            )
        return _fail(sig, f"JSON object inside extra text, and {detail}: {_show(output)}", FORMAT_CREDIT * frac * 0.5)
    if not isinstance(obj, dict):
        return _fail("json_not_object", f"expected a JSON object, got JSON {type(obj).__name__} {_show(output)}")
    sig, detail, frac = _judge_object(obj, item)
    if sig == "ok":
        return _ok("JSON object matches")
    return _fail(sig, f"{detail}: {_show(output)}", FORMAT_CREDIT * frac)


# --- registry -----------------------------------------------------------------------------------

CHECKERS: dict[str, Callable[[str, Item], CheckResult]] = {
    "exact_label": check_exact_label,
    "numeric": check_numeric,
    "regex": check_regex,
    "json_schema": check_json_schema,
}


def check(item: Item, output: str) -> CheckResult:
    """Run the item's checker on one model output."""
    if output is None or not str(output).strip():
        return _fail("empty_output", "the output is empty")
    output = str(output)
    max_chars = item.checker_args.get("max_chars")
    if max_chars is not None and len(output.strip()) > max_chars:
        return _fail("too_long", f"the output has {len(output.strip())} characters, more than {max_chars}")
    try:
        fn = CHECKERS[item.checker]
    except KeyError:
        known = ", ".join(CHECKERS)
        raise ValueError(f"item {item.id!r}: checker {item.checker!r} is unknown; use one of {known}") from None
    return fn(output, item)

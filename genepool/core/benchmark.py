"""The benchmark format: plain JSONL, one item per line.

Each line is a JSON object with the string fields ``id``, ``input``, ``expected``, ``checker``,
``split`` (train | validation | test) and ``task``, plus an optional ``checker_args`` object:

- ``exact_label``: ``{"labels": ["positive", "negative", "neutral"]}`` (optional; ``expected`` must be one
  of them)
- ``numeric``: ``{"tolerance": 0.01}`` (optional; ``expected`` must be a number)
- ``regex``: ``{"pattern": "...", "ignore_case": false}`` (``pattern`` required, must compile)
- ``json_schema``: ``{"schema": {...}}`` (required, must be a valid JSON schema); ``expected`` is either a
  JSON object (whose keys/values the output must match, and which must itself satisfy the schema) or "".
- every checker: ``{"max_chars": N}`` (optional; a longer output fails as ``too_long``).

Limits (``genepool.validation``), checked before a line is parsed or a field is used: the file is UTF-8 and at
most 50 MB, a line at most 200,000 characters, ``input``/``expected`` at most 20,000 characters (the model
never sees a 10 MB field), the other fields one line of at most 200; no NUL or control characters (tab and
newline are allowed in ``input``/``expected``).

``parse_benchmark`` collects every problem (up to ``MAX_ERRORS``) and raises one ``BenchmarkError``
whose message names the source, the line, the field and the fix for each.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genepool.core.checkers import CHECKERS  # checkers names Item only for type checking: no import cycle
from genepool.validation import (
    MAX_BENCHMARK_FIELD_CHARS,
    MAX_BENCHMARK_FILE_BYTES,
    MAX_BENCHMARK_LINE_CHARS,
    read_text_file,
    text_problem,
)

SPLITS = ("train", "validation", "test")
MAX_NAME_CHARS = 200  # id, checker, split, task: one line each
FIELD_LIMITS = {"input": MAX_BENCHMARK_FIELD_CHARS, "expected": MAX_BENCHMARK_FIELD_CHARS}
REQUIRED_FIELDS = ("id", "input", "expected", "checker", "split", "task")
MAX_ERRORS = 20


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used; ``errors`` lists every problem found (one per line)."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        head = f"{len(self.errors)} problem(s) in benchmark:\n" if len(self.errors) > 1 else ""
        super().__init__(head + "\n".join(self.errors))


@dataclass(frozen=True)
class Item:
    id: str
    input: str
    expected: str
    checker: str
    split: str
    task: str
    # Not part of equality/hash (a dict is unhashable); ids are unique within a benchmark anyway.
    checker_args: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "input": self.input,
            "expected": self.expected,
            "checker": self.checker,
            "split": self.split,
            "task": self.task,
        }
        if self.checker_args:
            d["checker_args"] = self.checker_args
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(", ", ": "))


def _checker_names() -> list[str]:
    return sorted(CHECKERS)


def _validate_args(item_d: dict[str, Any], where: str) -> list[str]:
    """Checker-specific validation of ``checker_args`` and ``expected``; returns error strings."""
    errs: list[str] = []
    checker = item_d["checker"]
    args = item_d.get("checker_args", {})
    expected = item_d["expected"]
    if "max_chars" in args and (not isinstance(args["max_chars"], int) or args["max_chars"] < 1):
        errs.append(f"{where}: field 'checker_args.max_chars' is {args['max_chars']!r}; use a positive integer")
    if checker == "exact_label":
        labels = args.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
                errs.append(
                    f"{where}: field 'checker_args.labels' is {labels!r}; use a non-empty list of strings, "
                    'e.g. ["positive", "negative", "neutral"]'
                )
            elif expected.strip().lower() not in {x.strip().lower() for x in labels}:
                errs.append(
                    f"{where}: field 'expected' is {expected!r}, which is not in checker_args.labels {labels}; "
                    "fix the label or add it to the list"
                )
        if not expected.strip():
            errs.append(f"{where}: field 'expected' is empty; exact_label needs the label to expect")
    elif checker == "numeric":
        try:
            float(expected)
        except ValueError:
            errs.append(f"{where}: field 'expected' is {expected!r}; numeric needs a number such as '48213' or '2.5'")
        tol = args.get("tolerance", 0)
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol) or tol < 0:
            errs.append(f"{where}: field 'checker_args.tolerance' is {tol!r}; use a non-negative number")
    elif checker == "regex":
        pattern = args.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            errs.append(f"{where}: field 'checker_args.pattern' is missing; regex needs {{\"pattern\": \"...\"}}")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                errs.append(
                    f"{where}: field 'checker_args.pattern' {pattern!r} does not compile ({exc}); "
                    "fix the regular expression (escape literal characters with \\)"
                )
    elif checker == "json_schema":
        import jsonschema

        schema = args.get("schema")
        if not isinstance(schema, dict):
            errs.append(
                f"{where}: field 'checker_args.schema' is missing or not an object; json_schema needs "
                '{"schema": {"type": "object", ...}}'
            )
            return errs
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            errs.append(
                f"{where}: field 'checker_args.schema' is not a valid JSON schema ({exc.message}); fix the schema"
            )
            return errs
        if expected.strip():
            try:
                exp = json.loads(expected)
            except json.JSONDecodeError:
                exp = None
            if not isinstance(exp, dict):
                errs.append(
                    f"{where}: field 'expected' is {expected!r}; json_schema needs a JSON object string "
                    "(e.g. '{\"intent\": \"refund\"}') or an empty string"
                )
            else:
                v = jsonschema.validators.validator_for(schema)(schema)
                bad = sorted(v.iter_errors(exp), key=lambda e: list(e.path))
                if bad:
                    errs.append(
                        f"{where}: field 'expected' does not satisfy checker_args.schema ({bad[0].message}); "
                        "fix the expected object or the schema"
                    )
    return errs


def parse_benchmark(lines: Iterable[str], source: str = "<benchmark>") -> list[Item]:
    """Parse JSONL lines into items. Blank lines are skipped. Raises ``BenchmarkError`` listing all problems."""
    checkers = _checker_names()
    items: list[Item] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    truncated = False
    for lineno, raw in enumerate(lines, start=1):
        if len(errors) >= MAX_ERRORS:
            truncated = True
            break
        line = raw.strip()
        if not line:
            continue
        where = f"{source} line {lineno}"
        if len(line) > MAX_BENCHMARK_LINE_CHARS:
            errors.append(f"{where}: is {len(line):,} characters (max {MAX_BENCHMARK_LINE_CHARS:,}); shorten the item")
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line")
            continue
        except RecursionError:
            errors.append(f"{where}: JSON nested too deeply; write one flat JSON object per line")
            continue
        if not isinstance(d, dict):
            errors.append(f"{where}: is a JSON {type(d).__name__}, not an object; write one JSON object per line")
            continue
        line_errs: list[str] = []
        for f in REQUIRED_FIELDS:
            if f not in d:
                line_errs.append(f"{where}: field '{f}' is missing; every item needs {', '.join(REQUIRED_FIELDS)}")
            elif not isinstance(d[f], str):
                line_errs.append(f"{where}: field '{f}' is {d[f]!r} ({type(d[f]).__name__}); make it a JSON string")
        extra = sorted(set(d) - set(REQUIRED_FIELDS) - {"checker_args"})
        if extra:
            line_errs.append(
                f"{where}: unknown field(s) {extra}; allowed fields are {', '.join(REQUIRED_FIELDS)}, checker_args"
            )
        if line_errs:
            errors.extend(line_errs)
            continue
        for f in REQUIRED_FIELDS:
            problem = text_problem(d[f], FIELD_LIMITS.get(f, MAX_NAME_CHARS), multiline=f in FIELD_LIMITS)
            if problem:
                line_errs.append(f"{where}: field '{f}' {problem}")
        if line_errs:
            errors.extend(line_errs)
            continue
        if not d["id"].strip():
            line_errs.append(f"{where}: field 'id' is empty; give every item a unique id")
        if not d["input"].strip():
            line_errs.append(f"{where}: field 'input' is empty; give the text the agent must answer")
        if d["checker"] not in checkers:
            line_errs.append(f"{where}: field 'checker' is {d['checker']!r}; use one of {', '.join(checkers)}")
        if d["split"] not in SPLITS:
            line_errs.append(f"{where}: field 'split' is {d['split']!r}; use one of {', '.join(SPLITS)}")
        if not d["task"].strip():
            line_errs.append(f"{where}: field 'task' is empty; name the task, e.g. 'sentiment'")
        if d["id"] in seen:
            line_errs.append(
                f"{where}: field 'id' is {d['id']!r}, already used on line {seen[d['id']]}; ids must be unique"
            )
        else:
            seen[d["id"]] = lineno
        args = d.get("checker_args", {})
        if not isinstance(args, dict):
            line_errs.append(f"{where}: field 'checker_args' is {args!r}; make it a JSON object")
        elif d["checker"] in checkers:
            line_errs.extend(_validate_args(d, where))
        if line_errs:
            errors.extend(line_errs)
            continue
        items.append(
            Item(
                id=d["id"],
                input=d["input"],
                expected=d["expected"],
                checker=d["checker"],
                split=d["split"],
                task=d["task"],
                checker_args=args,
            )
        )
    if errors:
        errors = errors[:MAX_ERRORS]
        if truncated:
            errors.append(f"{source}: stopped after {MAX_ERRORS} problems; fix these and run again")
        raise BenchmarkError(errors)
    if not items:
        raise BenchmarkError([f"{source}: no items; write one JSON object per line"])
    return items


def load_benchmark(path: str | Path) -> list[Item]:
    """Load and validate a JSONL benchmark file."""
    p = Path(path)
    if not p.is_file():
        raise BenchmarkError([f"{p}: benchmark file not found; pass the path of a .jsonl file"])
    text, problem = read_text_file(p, MAX_BENCHMARK_FILE_BYTES)  # size before reading, then strict UTF-8
    if problem:
        raise BenchmarkError([f"{p.name}: {problem}"])
    assert text is not None
    return parse_benchmark(text.split("\n"), source=p.name)


def split_items(items: Iterable[Item], split: str) -> list[Item]:
    """The items of one split, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}")
    return [it for it in items if it.split == split]


def write_benchmark(items: Iterable[Item], path: str | Path) -> Path:
    """Write items as JSONL (UTF-8, one object per line, trailing newline). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(it.to_json() + "\n" for it in items)
    p.write_text(text, encoding="utf-8")
    return p

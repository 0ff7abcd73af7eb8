"""Shared limits and validators for every input genepool reads (one standard, one-line errors).

Every check here returns a short problem text (or None) that the caller prefixes with *where*: the file, the
line and the field, e.g. ``agents.json: agent 'planner': field 'params.max_tokens': is -5; use 1..4096``.
Nothing here raises on hostile values: callers decide whether a problem rejects a row, a line or a file.

Limits are applied BEFORE anything expensive (JSON parsing of a whole file, template rendering,
tokenising): a 10 MB field is refused by its length, not by the model server running out of memory.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

# --- prompt genomes (templates) -------------------------------------------------------------------------
MAX_ROLE_CHARS = 4_000  # one field of a genome that is rendered as a template
MAX_INSTRUCTION_CHARS = 1_000  # hard limit; the sanity check's quality limit is stricter (300)
MAX_EXAMPLE_CHARS = 8_000  # input or output of one few-shot example
MAX_INSTRUCTIONS = 64
MAX_EXAMPLES = 128  # a pool when example_select > 0 (only the nearest are sent)
MAX_GENOME_CHARS = 40_000  # the whole genome (canonical JSON)
MAX_RENDERED_CHARS = 64_000  # the rendered system message
MAX_TEMPLATE_VALUE_CHARS = 20_000  # any intermediate string/list a template expression may build
MAX_TOKENS_RANGE = (1, 4096)
TEMPERATURE_RANGE = (0.0, 2.0)
MAX_STOPS = 8
MAX_STOP_CHARS = 32

# --- files and rows -----------------------------------------------------------------------------------
MAX_AGENTS_FILE_BYTES = 1_000_000
MAX_BENCHMARK_FILE_BYTES = 50_000_000
MAX_BENCHMARK_LINE_CHARS = 200_000
MAX_BENCHMARK_FIELD_CHARS = 20_000  # input / expected of one benchmark item (before tokenising)
MAX_TRACE_TEXT_CHARS = 100_000  # input / output / expected / error / checker_message of one trace row
MAX_TRACE_ID_CHARS = 512  # ids, agent type, source, versions, partition key

_BAD_MULTILINE = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\ud800-\\udfff]")
_BAD_SINGLE_LINE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]")


def text_problem(value: Any, max_chars: int, *, multiline: bool = True) -> str | None:
    """Why ``value`` is not acceptable text (not a string, too long, NUL, control characters, lone
    surrogates), or None. Tab, newline and carriage return are allowed when ``multiline``."""
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not a string; write it as a JSON string"
    if len(value) > max_chars:
        return f"is {len(value):,} characters long (max {max_chars:,}); shorten it"
    pos = value.find("\x00")
    if pos >= 0:
        return f"contains a NUL byte (\\x00) at character {pos}; remove it"
    m = (_BAD_MULTILINE if multiline else _BAD_SINGLE_LINE).search(value)
    if m:
        ch, i = m.group(0), m.start()
        if "\ud800" <= ch <= "\udfff":
            return f"contains an unpaired surrogate U+{ord(ch):04X} at character {i} (not valid UTF-8); remove it"
        return f"contains the control character U+{ord(ch):04X} at character {i}; remove it"
    return None


def utf8_problem(data: bytes) -> str | None:
    """Where ``data`` is not UTF-8 (line and column of the first bad byte), or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (
            f"line {line} column {col}: byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason}); "
            "save the file as UTF-8"
        )
    return None


def read_text_file(path: Path, max_bytes: int) -> tuple[str | None, str | None]:
    """(text, None) or (None, problem): a regular file, size checked before reading, then strict UTF-8."""
    try:
        if not path.is_file():
            return None, "is not a regular file; pass the path of a file"
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror}); check the path"
    if size > max_bytes:
        return None, f"is {size:,} bytes (max {max_bytes:,}); split or shorten it"
    data = path.read_bytes()
    problem = utf8_problem(data)
    if problem:
        return None, problem
    return data.decode("utf-8"), None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def params_problems(params: Any) -> list[tuple[str, str]]:
    """Problems of a genome's decoding parameters as (field, problem): max_tokens 1..4096,
    temperature 0..2 (finite), stop a list of at most 8 short strings; no other keys."""
    if not isinstance(params, dict):
        return [("params", f"is {type(params).__name__}; write an object like "
                           '{"temperature": 0.0, "max_tokens": 64, "stop": []}')]
    out: list[tuple[str, str]] = []
    unknown = sorted(set(params) - {"temperature", "max_tokens", "stop"})
    if unknown:
        out.append(("params", f"unknown key(s) {unknown}; allowed are temperature, max_tokens, stop"))
    lo, hi = MAX_TOKENS_RANGE
    if "max_tokens" in params:
        v = params["max_tokens"]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            out.append(("params.max_tokens", f"is {v!r}; use a whole number from {lo} to {hi}"))
    tlo, thi = TEMPERATURE_RANGE
    if "temperature" in params:
        v = params["temperature"]
        if not _number(v) or not math.isfinite(v) or not tlo <= v <= thi:
            out.append(("params.temperature", f"is {v!r}; use a number from {tlo:g} to {thi:g}"))
    if "stop" in params:
        stop = params["stop"]
        if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOPS:
            out.append(("params.stop", f"is {stop!r:.60}; use a list of at most {MAX_STOPS} short strings"))
        else:
            for i, s in enumerate(stop):
                if not isinstance(s, str) or not s:
                    out.append((f"params.stop[{i}]", f"is {s!r:.60}; use a non-empty string"))
                    continue
                problem = text_problem(s, MAX_STOP_CHARS)
                if problem:
                    out.append((f"params.stop[{i}]", problem))
    return out


def string_list_problems(value: Any, field: str, max_items: int, max_chars: int) -> list[tuple[str, str]]:
    """A JSON list of strings (never a bare string, which Python would split into characters)."""
    if isinstance(value, str):
        return [(field, f"is a string; write a list of strings, e.g. [{value[:40]!r}]")]
    if not isinstance(value, list):
        return [(field, f"is {type(value).__name__} ({value!r:.40}); write a list of strings")]
    if len(value) > max_items:
        return [(field, f"has {len(value)} entries (max {max_items}); keep the best ones")]
    out = []
    for i, v in enumerate(value):
        problem = text_problem(v, max_chars)
        if problem:
            out.append((f"{field}[{i}]", problem))
    return out

"""The only Jinja2 environments genepool renders with: sandboxed, bounded, no loader for prompts.

Prompt templates come from user agent files, mined examples, LLM reflection output and any row of
``genepool.prompts``, so they are hostile input. Two layers hold them:

1. **An allowlist of template features** (checked on the parsed template before it is compiled): text,
   ``{{ expression }}``, ``{% if %}``/``{% elif %}``/``{% else %}``, comments and ``{% raw %}``.
   Expressions may use variables, constants, arithmetic, comparisons, ``and``/``or``/``not``, ``~``,
   tests (``is defined``), a few filters (``upper``, ``lower``, ``trim``, ``default``, ``replace``, ...)
   and attribute/item access without a leading underscore. Function calls, loops, ``set``, macros,
   ``include``/``import``/``extends`` and blocks are refused: a prompt needs none of them, and without
   them the work of a render is bounded by the template's length.
2. **``ImmutableSandboxedEnvironment``** as the engine (unsafe attributes, mutation of lists and
   dicts are refused) with no globals (no ``range``, ``cycler``, ``joiner``, ``lipsum``, ``namespace``),
   ``call_binop`` intercepting every arithmetic operator so that ``"a" * 10**10`` or ``10**10**10``
   is refused before it is computed, filters wrapped with a size check made before they run, and
   the output streamed and cut at a cap.

Every failure -- syntax, undefined variable, security, division by zero, a size limit, nesting too
deep for the parser -- raises ``TemplateRefused`` with one line that names the problem and the fix.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from genepool.validation import MAX_RENDERED_CHARS, MAX_TEMPLATE_VALUE_CHARS


class TemplateRefused(ValueError):
    """A template that may not be rendered; the message is one line naming the problem and the fix."""


# Nodes a prompt template may contain (everything else is refused with a named reason).
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.If,
    nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.CondExpr,
    nodes.Concat, nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow,
    nodes.Filter, nodes.Test, nodes.List, nodes.Tuple, nodes.Getattr, nodes.Getitem, nodes.Slice,
)
_REFUSED_NAMES: dict[type[nodes.Node], str] = {
    nodes.Call: "function and method calls",
    nodes.For: "loops ({% for %})",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %} blocks",
    nodes.Macro: "macros",
    nodes.CallBlock: "{% call %} blocks",
    nodes.FilterBlock: "{% filter %} blocks",
    nodes.With: "{% with %}",
    nodes.Block: "{% block %}",
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Dict: "dict literals",
}

_binops: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _check_size(value: Any, what: str, limit: int = MAX_TEMPLATE_VALUE_CHARS) -> Any:
    if _size(value) > limit:
        raise SecurityError(f"{what} would build a value of {_size(value):,} items (max {limit:,})")
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose arithmetic and filters cannot build huge values."""

    intercepted_binops = frozenset(_binops)
    intercepted_unops = frozenset()
    max_value = MAX_TEMPLATE_VALUE_CHARS  # items of any intermediate string or list

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        limit = self.max_value
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > limit:
                    raise SecurityError(f"'*' would repeat a value {n:,} times (max {limit:,} items)")
        if op == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(right) > 64 or (isinstance(left, int) and abs(left) > 2**32 and right > 2):
                raise SecurityError(f"'**' of {left!r:.20} by {right!r:.20} would be too large (exponent max 64)")
        if op in ("*", "**") and isinstance(left, int) and isinstance(right, int):
            if max(abs(left), abs(right)).bit_length() > 256:
                raise SecurityError("number too large")
        if op == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not allowed; use ~ to join text")
        if op == "+" and _size(left) + _size(right) > limit:
            raise SecurityError(f"'+' would build a value of {_size(left) + _size(right):,} items")
        return _check_size(_binops[op](left, right), f"'{op}'", limit)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Unreachable for prompt templates (calls are refused before compiling); HTML templates may call.
        for arg in (*args, *kwargs.values()):  # e.g. "a".ljust(10**9): refuse before the allocation
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > __self.max_value:
                raise SecurityError(f"a call with the argument {arg:,} (max {__self.max_value:,}) is refused")
        return _check_size(super().call(__context, __obj, *args, **kwargs), "a call", __self.max_value)


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if hasattr(fn, "jinja_pass_arg") else 0  # environment / eval context / context comes first

    @functools.wraps(fn)
    def wrapper(*all_args: Any, **kwargs: Any) -> Any:
        value, args = (all_args[skip], all_args[skip + 1 :]) if len(all_args) > skip else (None, ())
        if name == "replace" and isinstance(value, str) and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            grow = (len(value) + 1) * len(new) if not old else value.count(old) * max(0, len(new) - len(old))
            if len(value) + grow > MAX_TEMPLATE_VALUE_CHARS:
                raise SecurityError(f"'replace' would build {len(value) + grow:,} characters")
        if name == "join" and isinstance(value, (list, tuple, str)):
            sep = str(args[0]) if args else str(kwargs.get("d", ""))
            total = sum(len(str(v)) for v in value) + len(sep) * max(0, len(value) - 1)
            if total > MAX_TEMPLATE_VALUE_CHARS:
                raise SecurityError(f"'join' would build {total:,} characters")
        return _check_size(fn(*all_args, **kwargs), f"filter '{name}'")

    return wrapper


PROMPT_FILTERS = (
    "upper", "lower", "title", "capitalize", "trim", "default", "d", "length", "count", "first", "last",
    "int", "float", "string", "round", "abs", "replace", "truncate", "wordcount", "join",
)


def _prompt_env() -> BoundedSandbox:
    env = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, loader=None, keep_trailing_newline=False)
    base = env.filters
    env.filters = {name: _bounded_filter(name, base[name]) for name in PROMPT_FILTERS}
    env.globals = {}
    return env


def _meta_env() -> BoundedSandbox:
    """For genepool's own meta-prompts (package data): loops allowed, still sandboxed and bounded."""
    env = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, loader=None, keep_trailing_newline=True)
    env.filters = {name: _bounded_filter(name, fn) for name, fn in env.filters.items()}
    env.globals = {}
    return env


PROMPT_ENV = _prompt_env()
META_ENV = _meta_env()


def html_environment(loader: jinja2.BaseLoader, filters: Mapping[str, Callable[..., Any]] = {}) -> BoundedSandbox:
    """The approval web page's environment: sandboxed, autoescaped, StrictUndefined, its own template folder."""
    env = BoundedSandbox(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                         lstrip_blocks=True)
    env.max_value = 10_000_000  # the page shows whole prompts and diffs; the values come from the database
    env.filters.update(filters)
    return env


def _check_nodes(tree: nodes.Template) -> None:
    for node in tree.find_all(nodes.Node):
        kind = type(node)
        if kind in _REFUSED_NAMES:
            raise TemplateRefused(
                f"{_REFUSED_NAMES[kind]} are not allowed in prompt templates (line {node.lineno}); "
                "use plain text, {{ variable }} and {% if %}"
            )
        if not isinstance(node, _ALLOWED_NODES):
            raise TemplateRefused(
                f"'{kind.__name__}' is not allowed in prompt templates (line {node.lineno}); "
                "use plain text, {{ variable }} and {% if %}"
            )
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateRefused(f"attribute {node.attr!r} is not allowed (line {node.lineno}); remove it")
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and str(node.arg.value)[:1] == "_":
            raise TemplateRefused(f"item {node.arg.value!r} is not allowed (line {node.lineno}); remove it")
        if isinstance(node, nodes.Filter) and node.name not in PROMPT_FILTERS:
            raise TemplateRefused(
                f"filter {node.name!r} is not allowed (line {node.lineno}); use one of {', '.join(PROMPT_FILTERS)}"
            )


@functools.lru_cache(maxsize=512)
def _compile_prompt(source: str) -> jinja2.Template | TemplateRefused:
    try:
        tree = PROMPT_ENV.parse(source)
        _check_nodes(tree)
        return PROMPT_ENV.from_string(tree)
    except TemplateRefused as exc:
        return exc
    except jinja2.TemplateSyntaxError as exc:
        return TemplateRefused(
            f"invalid Jinja2 template (line {exc.lineno}): {exc.message}; escape literal braces as "
            "{{ '{{' }} or fix the tag"
        )
    except (RecursionError, MemoryError):
        return TemplateRefused("template is nested too deeply to parse; remove the nested brackets or tags")
    except SecurityError as exc:
        return TemplateRefused(f"refused by the sandbox: {exc}")


def _stream(chunks: Iterable[str], limit: int) -> str:
    out: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise TemplateRefused(f"rendered text is over {limit:,} characters; shorten the template")
        out.append(chunk)
    return "".join(out)


def _render_errors(run: Callable[[], str], values: Mapping[str, Any]) -> str:
    try:
        return run()
    except TemplateRefused:
        raise
    except jinja2.UndefinedError as exc:
        raise TemplateRefused(
            f"template uses an undefined variable: {exc.message}; allowed variables are {sorted(values)}"
        ) from None
    except SecurityError as exc:
        raise TemplateRefused(f"refused by the sandbox: {exc}") from None
    except ZeroDivisionError:
        raise TemplateRefused("division by zero in the template; remove the arithmetic") from None
    except (RecursionError, MemoryError):
        raise TemplateRefused("template is nested too deeply to render; simplify it") from None
    except jinja2.TemplateError as exc:
        raise TemplateRefused(f"template error: {exc}; fix the tag") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateRefused(f"template expression failed ({type(exc).__name__}: {str(exc)[:120]}); fix it") from None


def render_prompt(
    source: str, values: Mapping[str, Any], *, max_source: int, max_output: int = MAX_RENDERED_CHARS
) -> str:
    """Render an untrusted prompt template: size limit on the source first, allowlist, sandbox, output cap."""
    if not isinstance(source, str):
        raise TemplateRefused(f"template is {type(source).__name__}, not text")
    if len(source) > max_source:
        raise TemplateRefused(f"template is {len(source):,} characters (max {max_source:,}); shorten it")
    compiled = _compile_prompt(source)
    if isinstance(compiled, TemplateRefused):
        raise TemplateRefused(str(compiled))
    return _render_errors(lambda: _stream(compiled.generate(**values), max_output), values)


def render_meta(source: str, values: Mapping[str, Any], *, max_output: int = MAX_RENDERED_CHARS) -> str:
    """Render one of genepool's own meta-prompt templates (trusted source, untrusted values)."""
    try:
        template = META_ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRefused(f"invalid meta-prompt template (line {exc.lineno}): {exc.message}") from None
    return _render_errors(lambda: _stream(template.generate(**values), max_output), values)

"""Benchmark JSONL format: parsing, validation errors that name line/field/fix, splits, round trip."""

from __future__ import annotations

import json

import pytest

from genepool.core.benchmark import (
    MAX_ERRORS,
    BenchmarkError,
    Item,
    load_benchmark,
    parse_benchmark,
    split_items,
    write_benchmark,
)

GOOD = {
    "id": "a1",
    "input": "Classify the sentiment of: great!",
    "expected": "positive",
    "checker": "exact_label",
    "split": "train",
    "task": "sentiment",
}


def line(**changes) -> str:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...})


def errors_of(lines, source="support.jsonl") -> list[str]:
    with pytest.raises(BenchmarkError) as exc:
        parse_benchmark(lines, source=source)
    return exc.value.errors


def test_parse_valid_lines_and_skip_blank_ones():
    items = parse_benchmark(
        [line(), "", line(id="a2", split="test", checker="numeric", expected="42", task="num")], source="x.jsonl"
    )
    assert [i.id for i in items] == ["a1", "a2"]
    assert items[0] == Item("a1", GOOD["input"], "positive", "exact_label", "train", "sentiment")
    assert items[1].checker == "numeric" and items[1].checker_args == {}


def test_unknown_checker_message_names_file_line_field_and_fix():
    errs = errors_of([line(), line(id="b", checker="exactt")])
    assert errs == [
        "support.jsonl line 2: field 'checker' is 'exactt'; use one of exact_label, json_schema, numeric, regex"
    ]


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("{not json", "line 1: not valid JSON"),
        ("[1, 2]", "line 1: is a JSON list, not an object"),
        (line(split="dev"), "field 'split' is 'dev'; use one of train, validation, test"),
        (line(task=...), "field 'task' is missing"),
        (line(expected=3), "field 'expected' is 3 (int); make it a JSON string"),
        (line(id=""), "field 'id' is empty"),
        (line(notes="x"), "unknown field(s) ['notes']"),
        (line(checker="regex"), "field 'checker_args.pattern' is missing"),
        (line(checker="regex", checker_args={"pattern": "(ab"}), "field 'checker_args.pattern' '(ab' does not compile"),
        (line(checker="json_schema", checker_args={"schema": {"type": "objekt"}}), "is not a valid JSON schema"),
        (line(checker="json_schema"), "field 'checker_args.schema' is missing"),
        (
            line(checker="json_schema", expected="refund", checker_args={"schema": {"type": "object"}}),
            "json_schema needs a JSON object string",
        ),
        (
            line(
                checker="json_schema",
                expected='{"a": "x"}',
                checker_args={"schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            ),
            "field 'expected' does not satisfy checker_args.schema",
        ),
        (line(checker="numeric", expected="forty"), "numeric needs a number"),
        (line(checker_args={"labels": ["a", "b"]}), "not in checker_args.labels"),
        (line(checker_args={"labels": "a,b"}), "field 'checker_args.labels' is 'a,b'"),
        (line(checker_args=[1]), "field 'checker_args' is [1]; make it a JSON object"),
        (line(checker_args={"max_chars": 0}), "field 'checker_args.max_chars' is 0"),
    ],
)
def test_each_kind_of_problem_is_reported(raw, fragment):
    errs = errors_of([raw])
    assert any(fragment in e for e in errs), errs
    assert all(e.startswith("support.jsonl line 1") for e in errs)


def test_duplicate_id_names_both_lines():
    errs = errors_of([line(), line(input="other")])
    assert errs == ["support.jsonl line 2: field 'id' is 'a1', already used on line 1; ids must be unique"]


def test_all_errors_are_collected_into_one_exception():
    lines = [line(id="ok")] + [line(id=f"x{i}", split="dev") for i in range(3)] + ["{bad"]
    with pytest.raises(BenchmarkError) as exc:
        parse_benchmark(lines, source="s.jsonl")
    assert len(exc.value.errors) == 4
    msg = str(exc.value)
    assert msg.startswith("4 problem(s) in benchmark:")
    for n in (2, 3, 4, 5):
        assert f"s.jsonl line {n}:" in msg
    assert isinstance(exc.value, ValueError)


def test_error_list_is_capped():
    lines = [line(id=f"x{i}", split="dev") for i in range(MAX_ERRORS + 15)]
    errs = errors_of(lines)
    assert len(errs) == MAX_ERRORS + 1
    assert errs[-1] == f"support.jsonl: stopped after {MAX_ERRORS} problems; fix these and run again"


def test_empty_benchmark_is_an_error():
    assert errors_of(["", "  "]) == ["support.jsonl: no items; write one JSON object per line"]


def test_write_then_load_round_trip(tmp_path):
    items = [
        Item("a", "in a", "positive", "exact_label", "train", "s", {"labels": ["positive", "negative"]}),
        Item("b", "in b — ü", "42", "numeric", "validation", "n"),
        Item("c", "in c", "", "regex", "test", "r", {"pattern": r"\d+"}),
    ]
    path = write_benchmark(items, tmp_path / "sub" / "bench.jsonl")
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 3 and "ü" in text
    loaded = load_benchmark(path)
    assert [i.to_dict() for i in loaded] == [i.to_dict() for i in items]
    # writing what was loaded gives the same bytes
    write_benchmark(loaded, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_load_names_the_file_in_errors(tmp_path):
    p = tmp_path / "broken.jsonl"
    p.write_text(line() + "\n" + line(id="z", split="prod") + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"broken\.jsonl line 2: field 'split' is 'prod'"):
        load_benchmark(p)
    with pytest.raises(BenchmarkError, match="benchmark file not found"):
        load_benchmark(tmp_path / "missing.jsonl")


def test_split_items_keeps_order_and_rejects_unknown_split():
    items = parse_benchmark(
        [line(id="1"), line(id="2", split="test"), line(id="3"), line(id="4", split="validation")]
    )
    assert [i.id for i in split_items(items, "train")] == ["1", "3"]
    assert [i.id for i in split_items(items, "validation")] == ["4"]
    with pytest.raises(ValueError, match="split='dev' is unknown; use one of train, validation, test"):
        split_items(items, "dev")


def test_item_is_hashable_and_frozen():
    item = Item("a", "b", "c", "exact_label", "train", "t", {"labels": ["c"]})
    assert {item: 1}[item] == 1
    with pytest.raises(AttributeError):
        item.id = "z"  # type: ignore[misc]


# --- hostile input: encoding, sizes, NUL and control characters (issue 7, point 9) ----------------------
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"input": "a" * 10_000_000}, "characters (max 200,000); shorten the item"),  # refused before parsing
        ({"input": "a" * 150_000}, "field 'input' is 150,000 characters long (max 20,000)"),
        ({"input": "ab\x00c"}, "field 'input' contains a NUL byte"),
        ({"expected": "ok\x1b[31m"}, "field 'expected' contains the control character U+001B"),
        ({"id": "a\nb"}, "field 'id' contains the control character U+000A"),
        ({"input": "bad \ud800 surrogate"}, "field 'input' contains an unpaired surrogate U+D800"),
        ({"checker_args": {"tolerance": float("nan")}, "checker": "numeric", "expected": "4"},
         "field 'checker_args.tolerance' is nan"),
    ],
)
def test_hostile_fields_are_refused_with_line_and_field(change, fragment):
    line = json.dumps({**GOOD, "id": "a2", **change})
    with pytest.raises(BenchmarkError) as err:
        parse_benchmark([json.dumps(GOOD), line], source="b.jsonl")
    msg = str(err.value)
    assert msg.startswith("b.jsonl line 2: ") and fragment in msg and "\n" not in msg, msg


def test_a_benchmark_file_that_is_not_utf8_names_line_and_column(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes((json.dumps(GOOD) + "\n").encode() + b'{"id": "x\xff"}\n')
    with pytest.raises(BenchmarkError, match=r"b.jsonl: line 2 column 10: byte 0xff is not UTF-8"):
        load_benchmark(p)


def test_deeply_nested_json_is_an_error_not_a_crash():
    with pytest.raises(BenchmarkError, match=r"line 1: JSON nested too deeply|line 1: .*not an object"):
        parse_benchmark(["[" * 100_000 + "]" * 100_000])

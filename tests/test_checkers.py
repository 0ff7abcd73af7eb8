"""Checkers: strict success, partial-credit scores and stable failure signatures."""

from __future__ import annotations

import json

import pytest

from genepool.core.benchmark import Item
from genepool.core.checkers import CHECKERS, FORMAT_CREDIT, CheckResult, check

SENT = {"labels": ["positive", "negative", "neutral"]}
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["refund", "cancel", "exchange", "track"]},
        "order_id": {"type": "integer"},
    },
    "required": ["intent", "order_id"],
    "additionalProperties": False,
}


def label_item(expected="negative", args=SENT) -> Item:
    return Item("s1", "Classify ...", expected, "exact_label", "validation", "sentiment", dict(args))


def num_item(expected="48213", **args) -> Item:
    return Item("n1", "Extract ...", expected, "numeric", "validation", "order_id", args)


def json_item(expected=None) -> Item:
    exp = json.dumps(expected if expected is not None else {"intent": "refund", "order_id": 48213})
    return Item("j1", "Return JSON ...", exp, "json_schema", "validation", "intent_json", {"schema": SCHEMA})


def sig(item: Item, output: str) -> str:
    return check(item, output).signature


def test_registry_names_and_result_type():
    assert sorted(CHECKERS) == ["exact_label", "json_schema", "numeric", "regex"]
    r = check(label_item(), "negative")
    assert isinstance(r, CheckResult) and r == CheckResult(True, 1.0, "label 'negative'", "ok")


@pytest.mark.parametrize("output", ["negative", "Negative", "  NEGATIVE.\n", "negative."])
def test_exact_label_accepts_only_the_label(output):
    r = check(label_item(), output)
    assert r.success and r.score == 1.0 and r.signature == "ok"


@pytest.mark.parametrize(
    "output, signature",
    [
        ("positive", "wrong_label"),
        ("The sentiment is negative.", "label_with_extra_text"),
        ("Sentiment: negative", "label_with_extra_text"),
        ("negative!", "label_with_extra_text"),
        ("'negative'", "label_with_extra_text"),
        ("The sentiment is positive.", "wrong_label"),
        ("It could be negative or neutral.", "multiple_labels"),
        ("I'm sorry to hear that. How can I help?", "label_not_in_set"),
        ("", "empty_output"),
        ("   \n", "empty_output"),
        ("negatively", "label_not_in_set"),  # a different word, not the label
    ],
)
def test_exact_label_failure_signatures(output, signature):
    r = check(label_item(), output)
    assert not r.success
    assert r.signature == signature, r.message


def test_exact_label_scores_and_message():
    extra = check(label_item(), "The sentiment is negative.")
    assert extra.score == FORMAT_CREDIT
    assert extra.message == "expected label 'negative', got 'The sentiment is negative.' (right label, extra text)"
    assert check(label_item(), "positive").score == 0.0


def test_exact_label_longer_label_does_not_count_as_shorter():
    item = label_item("correct", {"labels": ["correct", "incorrect"]})
    assert sig(item, "incorrect") == "wrong_label"
    assert sig(item, "The answer is incorrect.") == "wrong_label"
    assert sig(item, "The answer is correct.") == "label_with_extra_text"
    inc = label_item("incorrect", {"labels": ["correct", "incorrect"]})
    assert sig(inc, "This is incorrect") == "label_with_extra_text"


def test_exact_label_without_label_set():
    item = label_item("billing", {})
    assert check(item, "Billing").success
    assert sig(item, "shipping") == "wrong_label"
    assert sig(item, "Send it to billing please") == "label_with_extra_text"


@pytest.mark.parametrize("output", ["48213", " 48213.\n", "48,213"])
def test_numeric_accepts_the_bare_number(output):
    assert check(num_item(), output).success


@pytest.mark.parametrize(
    "output, signature",
    [
        ("48212", "wrong_number"),
        ("#48213", "number_with_extra_text"),
        ("The order number is 48213.", "number_with_extra_text"),
        ("Order 3 of 5", "wrong_number"),
        ("There is no order number.", "no_number"),
        ("", "empty_output"),
    ],
)
def test_numeric_failure_signatures(output, signature):
    r = check(num_item(), output)
    assert not r.success and r.signature == signature, r.message


def test_numeric_tolerance_and_scores():
    assert check(num_item("2.5", tolerance=0.1), "2.55").success
    assert not check(num_item("2.5", tolerance=0.01), "2.55").success
    assert check(num_item(), "It is 48213").score == FORMAT_CREDIT
    assert check(num_item(), "12").score == 0.0


def test_regex_fullmatch_on_stripped_output():
    item = Item("r1", "Give a date", "", "regex", "test", "date", {"pattern": r"\d{4}-\d{2}-\d{2}"})
    assert check(item, " 2026-01-31\n").success
    r = check(item, "Date: 2026-01-31")
    assert not r.success and r.signature == "regex_no_match"
    ic = Item("r2", "Say yes", "", "regex", "test", "yn", {"pattern": "yes|no", "ignore_case": True})
    assert check(ic, "YES").success


def test_json_schema_accepts_only_a_matching_object():
    item = json_item()
    assert check(item, '{"intent": "refund", "order_id": 48213}').success
    assert check(item, ' {"order_id": 48213, "intent": "refund"} ').success  # key order and whitespace
    # the schema's enum is case-sensitive: the schema is the contract
    assert check(item, '{"intent": "Refund", "order_id": 48213}').signature == "json_wrong_value:intent"


@pytest.mark.parametrize(
    "output, signature",
    [
        ("refund 48213", "not_json"),
        ('```json\n{"intent": "refund", "order_id": 48213}\n```', "json_with_extra_text"),
        ('Here is the JSON: {"intent": "refund", "order_id": 48213}', "json_with_extra_text"),
        ('["refund", 48213]', "json_not_object"),
        ('{"intent": "refund"}', "json_missing_key:order_id"),
        ('{"intent": "refund", "order_id": "48213"}', "json_wrong_value:order_id"),
        ('{"intent": "return", "order_id": 48213}', "json_wrong_value:intent"),
        ('{"intent": "cancel", "order_id": 48213}', "json_wrong_value:intent"),
        ('{"intent": "refund", "order_id": 48214}', "json_wrong_value:order_id"),
        ('{"intent": "refund", "order_id": 48213, "note": "x"}', "json_extra_key:note"),
        ('{"intent": "refund", "order_id": 48213', "not_json"),
    ],
)
def test_json_schema_failure_signatures(output, signature):
    r = check(json_item(), output)
    assert not r.success and r.signature == signature, r.message


def test_json_scores_rank_closer_answers_higher():
    item = json_item()
    fenced = check(item, '```json\n{"intent": "refund", "order_id": 48213}\n```').score
    half = check(item, '{"intent": "refund", "order_id": 48214}').score
    none = check(item, '{"intent": "cancel", "order_id": 1}').score
    assert fenced == FORMAT_CREDIT and 0 < half < fenced and none == 0.0


def test_json_schema_without_expected_object_only_validates():
    item = Item("j2", "Any JSON", "", "json_schema", "test", "free", {"schema": SCHEMA})
    assert check(item, '{"intent": "track", "order_id": 1}').success
    assert check(item, '{"intent": "track"}').signature == "json_missing_key:order_id"


def test_too_long_applies_to_every_checker():
    item = Item("s2", "x", "negative", "exact_label", "test", "sentiment", {"max_chars": 10})
    r = check(item, "negative negative negative")
    assert not r.success and r.signature == "too_long" and "10" in r.message


def test_unknown_checker_is_a_clear_error():
    item = Item("x", "x", "a", "exactt", "test", "t", {})
    with pytest.raises(ValueError, match="checker 'exactt' is unknown; use one of exact_label"):
        check(item, "a")

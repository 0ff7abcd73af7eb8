import pytest

from genepool.core.clustering import cluster_failures, describe_signature


def _fail(i, task, sig, msg="m"):
    return {"trace_id": f"t{i:02d}", "item_id": f"i{i}", "task": task, "signature": sig, "success": False,
            "checker_message": msg, "output": "x"}


def test_clusters_group_by_task_and_signature_with_shares_and_deterministic_order():
    failed = (
        [_fail(i, "sentiment", "label_with_extra_text", f"extra {i}") for i in range(6)]
        + [_fail(10 + i, "extract", "no_number") for i in range(3)]
        + [_fail(20 + i, "sentiment", "wrong_label") for i in range(3)]
    )
    clusters = cluster_failures(list(reversed(failed)), total=40)
    assert [c.key for c in clusters] == [
        "sentiment:label_with_extra_text",
        "extract:no_number",
        "sentiment:wrong_label",
    ]
    top = clusters[0]
    assert top.count == 6 and top.share == pytest.approx(0.5) and top.rate == pytest.approx(6 / 40)
    assert top.name == "sentiment: right label but extra text around it"
    assert top.hint == "Answer with the label only, no other words."
    assert top.example_trace_ids == ("t00", "t01", "t02")  # sorted, at most 3
    assert top.example_messages[0] == "extra 0"
    assert sum(c.share for c in clusters) == pytest.approx(1.0)
    # the same input in another order gives the same clusters
    assert cluster_failures(failed, 40) == clusters


def test_successes_are_ignored_and_total_is_validated():
    rows = [_fail(1, "a", "not_json"), {**_fail(2, "a", "ok"), "success": True}]
    clusters = cluster_failures(rows, total=2)
    assert len(clusters) == 1 and clusters[0].share == 1.0 and clusters[0].rate == 0.5
    with pytest.raises(ValueError, match="total=0"):
        cluster_failures(rows, total=0)


def test_signature_with_detail_and_unknown_signature():
    text, hint = describe_signature("json_missing_key:order_id")
    assert "order_id" in text and '"order_id"' in hint
    text, hint = describe_signature("weird_failure")
    assert text == "weird failure" and hint


def test_cluster_round_trips_through_a_dict():
    import json

    c = cluster_failures([_fail(1, "a", "not_json"), _fail(2, "a", "not_json")], 5)[0]
    from genepool.core.clustering import FailureCluster

    assert FailureCluster.from_dict(json.loads(json.dumps(c.to_dict()))) == c

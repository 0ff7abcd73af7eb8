"""benchmarks/stats.py and genepool/core/significance.py against values computed by hand."""

from __future__ import annotations

import pytest

from benchmarks import stats
from genepool.core.significance import clopper_pearson_lower, paired_lower_bound


def test_mcnemar_exact_known_values():
    # binom.test(2, 12, 0.5) two-sided = 2 * (1 + 12 + 66) / 4096
    assert stats.mcnemar_exact_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact_p(2, 10) == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)
    assert stats.mcnemar_exact_p(5, 5) == 1.0
    assert stats.mcnemar_exact_p(1, 0) == 1.0
    assert stats.mcnemar_exact_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_exact_p(-1, 2)


def test_mcnemar_from_paired_outcomes_counts_only_discordant_items():
    a = [1, 1, 1, 1, 0, 0, 1, 0]
    b = [1, 0, 0, 0, 0, 1, 1, 0]
    assert stats.discordant(a, b) == (3, 1)
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 * (1 + 4) / 16)
    with pytest.raises(ValueError, match="same items"):
        stats.discordant([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        stats.discordant([1, 2], [1, 0])


def test_bootstrap_ci_brackets_the_rate_and_is_deterministic():
    outcomes = [1] * 42 + [0] * 43  # 49.4% of 85
    lo, hi = stats.bootstrap_ci(outcomes)
    assert lo < 42 / 85 < hi
    # roughly +-1.96 * sqrt(p(1-p)/n) = +-10.6 points
    assert 0.08 < (hi - lo) / 2 < 0.13
    assert stats.bootstrap_ci(outcomes) == (lo, hi)
    assert stats.bootstrap_ci([1] * 10) == (1.0, 1.0)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])


def test_paired_bootstrap_difference_and_summary():
    a = [1] * 30 + [0] * 10
    b = [1] * 10 + [0] * 30
    diff, lo, hi = stats.paired_bootstrap_diff(a, b)
    assert diff == 0.5 and 0.3 < lo < 0.5 < hi < 0.7
    s = stats.summarize(a, b)
    assert s["n"] == 40 and s["success_rate"] == 0.75 and s["discordant"] == {"only_this": 20, "only_reference": 0}
    assert s["paired_p"] < 1e-5 and s["ci95"][0] < 0.75 < s["ci95"][1]
    assert "paired_p" not in stats.summarize(a)


def test_clopper_pearson_lower_bound_known_value():
    # all n successes: the one-sided lower bound is alpha ** (1 / n)
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** 0.1, abs=1e-6)
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0


def test_paired_lower_bound_gates_small_gains():
    prod = {f"i{k}": k < 10 for k in range(30)}  # 10/30
    one_more = {**prod, "i10": True}  # 11/30: one discordant win is not significant
    assert paired_lower_bound(one_more, prod, 0.9) < 0
    assert paired_lower_bound(one_more, prod, 0.0) == pytest.approx(1 / 30)
    many_more = {f"i{k}": k < 20 for k in range(30)}  # 20/30, 10 wins and no loss
    assert paired_lower_bound(many_more, prod, 0.9) > 0.15
    with pytest.raises(ValueError, match="share no"):
        paired_lower_bound({"x": True}, {"y": True})


def test_readme_tables_are_the_committed_results():
    """The README's benchmark tables are exactly what `python -m benchmarks.compare --readme-table` and
    `--readme-summary` print from the committed benchmarks/results/<agent>/compare.json (no hand-edited figure)."""
    from pathlib import Path

    from benchmarks import compare

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    folders = sorted(p.parent for p in (root / "benchmarks" / "results").glob("*/compare.json"))  # as the CLI
    assert {f.name for f in folders} >= {"support-desk", "critic"}
    for name, render in (("bench-table", compare.readme_table), ("bench-summary", compare.readme_summary)):
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        assert start in readme and end in readme, f"README.md lacks the {start} ... {end} block"
        block = readme.split(start, 1)[1].split(end, 1)[0].strip()
        assert block == render(folders).strip(), f"README.md's {name} differs from the committed compare.json"


def test_write_readme_rewrites_only_the_marked_blocks(tmp_path, monkeypatch):
    from benchmarks import compare

    monkeypatch.setitem(compare.README_BLOCKS, "bench-table", lambda folders: f"TABLE of {len(folders)}")
    monkeypatch.setitem(compare.README_BLOCKS, "bench-summary", lambda folders: "SUMMARY")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-table:start -->\nold\n<!-- bench-table:end -->\nmiddle\n"
                      "<!-- bench-summary:start -->\nold\nold\n<!-- bench-summary:end -->\nend\n", encoding="utf-8")
    compare.write_readme(readme, [tmp_path, tmp_path])
    assert readme.read_text(encoding="utf-8") == (
        "intro\n<!-- bench-table:start -->\nTABLE of 2\n<!-- bench-table:end -->\nmiddle\n"
        "<!-- bench-summary:start -->\nSUMMARY\n<!-- bench-summary:end -->\nend\n")
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="needs exactly one <!-- bench-table:start -->"):
        compare.write_readme(readme, [])
    assert readme.read_text(encoding="utf-8") == "no markers\n"

"""The context-budget benchmark's paired comparison (the model runs are in ``python -m bench context``)."""

from __future__ import annotations

import math

from bench.context import paired_differences, render


def record(qid: str, f1: float, total_s: float, answerable: bool = True) -> dict:
    return {
        "id": qid,
        "f1": f1 if answerable else math.nan,
        "cited_reference_doc": 1.0 if answerable else math.nan,
        "abstention_correct": 1.0,
        "total_s": total_s,
    }


def test_each_budget_is_compared_with_the_default_question_by_question() -> None:
    default = [record("a", 0.5, 5.0), record("b", 0.7, 6.0), record("c", 0.0, 1.0, answerable=False)]
    smaller = [record("b", 0.6, 5.0), record("a", 0.3, 4.0), record("c", 0.0, 0.5, answerable=False)]

    result = paired_differences({1000: default, 600: smaller}, 1000)

    assert set(result) == {"600"}
    f1 = result["600"]["f1"]
    assert f1["mean"] == -0.15  # (0.3 - 0.5 + 0.6 - 0.7) / 2: matched by id, the unanswerable one left out
    assert f1["ci95"][0] <= f1["mean"] <= f1["ci95"][1] <= -0.1
    assert result["600"]["total_s"]["mean"] == round((-1.0 - 1.0 - 0.5) / 3, 3)
    assert result["600"]["abstention_correct"] == {"mean": 0.0, "ci95": [0.0, 0.0]}


def test_no_comparison_without_the_default_budget_and_render_lists_each_difference() -> None:
    assert paired_differences({600: [record("a", 0.5, 1.0)]}, 1000) == {}
    result = {
        "config": {"questions": 1, "answerable": 1, "generator": "g", "top_k": 4, "retrieval_mode": "hybrid"},
        "budgets": [],
        "paired_vs_default": {"600": {"f1": {"mean": -0.028, "ci95": [-0.071, 0.001]}}},
    }
    assert "600 chars minus the default, paired: f1 -0.028 [-0.071, +0.001]" in render(result)

"""Retrieval and answer metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from eval.metrics import (
    abstention_correct,
    decision_correct,
    extract_decision,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    normalize_tokens,
    ranked_documents,
    recall_at_k,
    retrieval_scores,
    rouge_l,
    token_f1,
)

RANKED = ["a", "b", "c", "d"]
RELEVANCE = {"b": 1, "d": 2, "x": 1, "z": 0}


def test_chunks_aggregate_to_documents_by_best_rank() -> None:
    assert ranked_documents(["d2", "d1", "d2", "", "d3", "d1"]) == ["d2", "d1", "d3"]


def test_hit_recall_mrr_by_hand() -> None:
    assert hit_at_k(RANKED, RELEVANCE, 1) == 0.0
    assert hit_at_k(RANKED, RELEVANCE, 2) == 1.0
    assert recall_at_k(RANKED, RELEVANCE, 2) == pytest.approx(1 / 3)  # b of {b, d, x}; z has grade 0
    assert recall_at_k(RANKED, RELEVANCE, 4) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, RELEVANCE, 10) == pytest.approx(1 / 2)
    assert mrr_at_k(RANKED, RELEVANCE, 1) == 0.0


def test_ndcg_by_hand() -> None:
    dcg = 1 / math.log2(3) + 2 / math.log2(5)  # b at rank 2 (grade 1), d at rank 4 (grade 2)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # grades 2, 1, 1
    assert ndcg_at_k(RANKED, RELEVANCE, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RANKED, RELEVANCE, 4) == pytest.approx(0.476626, abs=1e-6)
    assert ndcg_at_k(RANKED, RELEVANCE, 1) == 0.0
    assert ndcg_at_k(["d", "b", "x"], RELEVANCE, 10) == pytest.approx(1.0)


def test_no_relevant_documents_is_nan_not_zero() -> None:
    scores = retrieval_scores(RANKED, {"a": 0})
    assert set(scores) >= {"ndcg_at_10", "recall_at_100", "mrr_at_10", "hit_at_1"}
    assert all(math.isnan(v) for v in scores.values())


def test_token_f1_and_rouge_l_by_hand() -> None:
    assert normalize_tokens("The city of Mainz [1], around 1400.") == ["city", "of", "mainz", "around", "1400"]
    assert token_f1("Mainz, around 1400 [1].", "Mainz around 1400") == 1.0
    assert token_f1("The city of Mainz", "Mainz, around 1400") == pytest.approx(1 / 3)
    assert token_f1("Paris", "Mainz") == 0.0
    assert math.isnan(token_f1("anything", None))
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)
    p, r = 2 / 4, 2 / 3  # LCS "x y" of "x y z w" and "w x y"
    assert rouge_l("x y z w", "w x y") == pytest.approx(2 * p * r / (p + r))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes, regular exercise lowered blood pressure [1].", "yes"),
        ("No. Fracture rates did not differ [2].", "no"),
        ("The evidence is unclear and results were mixed [1].", "maybe"),
        ("Coffee intake was not associated with fractures [1].", "no"),
        ("Regular exercise lowered resting blood pressure [1]. It did not change weight.", "yes"),
        ("Notably, the trial improved outcomes.", "yes"),
    ],
)
def test_decision_extraction(answer: str, expected: str) -> None:
    assert extract_decision(answer) == expected


def test_abstentions_and_decisions_scoring() -> None:
    assert extract_decision("I don't know based on the provided documents.", abstained=True) is None
    assert decision_correct(None, "yes") == 0.0
    assert decision_correct("no", "no") == 1.0
    assert math.isnan(decision_correct("no", None))
    assert abstention_correct(True, False) == 1.0
    assert abstention_correct(False, True) == 1.0
    assert abstention_correct(True, True) == 0.0
    assert abstention_correct(False, False) == 0.0
    assert math.isnan(abstention_correct(True, None))

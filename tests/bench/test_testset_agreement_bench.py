"""The agreement benchmark's statistics: Kendall's tau-b against scipy, and the bootstrap interval's shape."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from bench.testset_agreement import CONFIGS, agreement, kendall_tau_b, pairs


@pytest.mark.parametrize(
    ("x", "y"),
    [([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]), ([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]),
     ([0.5, 0.2, 0.2, 0.9, 0.1], [0.4, 0.3, 0.1, 0.8, 0.3]), ([0.3, 0.1, 0.2, 0.6, 0.5], [0.2, 0.1, 0.3, 0.5, 0.6])],
)
def test_tau_b_matches_scipy(x: list[float], y: list[float]) -> None:
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)


def test_agreement_of_identical_rankings_is_one_and_of_reversed_is_minus_one() -> None:
    rng = np.random.default_rng(0)
    human = {c: np.clip(rng.normal(0.2 + 0.15 * i, 0.05, 40), 0, 1) for i, c in enumerate(CONFIGS)}
    same = agreement(human, {c: v + 0.01 for c, v in human.items()}, seed=1)
    assert same["kendall_tau"] == 1.0 and same["kendall_tau_ci95"][0] > 0.5
    names = list(CONFIGS)
    reversed_ = agreement(human, {c: human[names[-1 - i]] for i, c in enumerate(names)}, seed=1)
    assert reversed_["kendall_tau"] == -1.0 and reversed_["kendall_tau_ci95"][1] < 0


def test_pairs_separate_real_disagreement_from_noise() -> None:
    """A pair is ``disagree`` only when both sets order it with intervals excluding 0; a coin toss is unresolved."""
    rng = np.random.default_rng(3)
    n = 60
    base = rng.uniform(0.3, 0.7, n)
    human = {c: base + 0.1 * i for i, c in enumerate(CONFIGS)}  # every pair clearly ordered, first config lowest
    generated = {c: v.copy() for c, v in human.items()}
    generated["dense"] = base + 0.5  # dense: lowest for people, highest for the generated set
    generated["bm25"] = human["hybrid"] + rng.normal(0, 0.3, n)  # bm25: a coin toss against hybrid
    rows = {row["pair"]: row for row in agreement(human, generated, seed=1)["pairs"]}
    assert len(rows) == 10
    assert rows["dense - hybrid"]["verdict"] == "disagree" and rows["dense - hybrid"]["generated"] > 0
    assert rows["hybrid - hybrid+rerank"]["verdict"] == "agree"
    assert rows["bm25 - hybrid"]["verdict"] == "unresolved"
    low, high = rows["bm25 - hybrid"]["generated_ci"]
    assert low < 0 < high
    human_only = {row["pair"]: row["verdict"] for row in pairs(human, None)}
    assert set(human_only.values()) == {"resolved"}
    tied = {c: base.copy() for c in CONFIGS}  # a saturated set orders nothing
    assert {row["verdict"] for row in pairs(tied, None)} == {"unresolved"}

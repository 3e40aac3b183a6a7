"""The agreement benchmark's statistics: Kendall's tau-b against scipy, and the bootstrap interval's shape."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from bench.testset_agreement import CONFIGS, agreement, kendall_tau_b


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

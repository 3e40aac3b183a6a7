from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from rag.errors import InvalidInputError
from rag.ml.analysis import analyze_dataset, overlap_rows
from rag.ml.seed import set_seed


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1).item())


def test_set_seed_makes_python_numpy_and_torch_repeat() -> None:
    report = set_seed(7)
    first = _draws()
    set_seed(7)
    assert _draws() == first
    set_seed(8)
    assert _draws() != first
    assert report["torch"] is True and report["deterministic_algorithms"] is True
    assert torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)


def test_set_seed_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="seed"):
        set_seed(-1)


def test_analysis_of_german_credit(german: pd.DataFrame) -> None:
    analysis = analyze_dataset(german, "risk")
    assert analysis.target is not None
    assert analysis.target.counts == {"1": 700, "0": 300}
    assert analysis.target.imbalance_ratio == pytest.approx(700 / 300)
    assert not analysis.target.imbalanced
    assert set(analysis.numeric) == {"credit_amount", "duration", "age"}
    assert "job" in analysis.categorical  # four integer codes are categories, not a continuous scale
    assert analysis.numeric["credit_amount"].heavily_skewed
    assert analysis.numeric["credit_amount"].looks_normal is False
    assert all(rate == 0 for rate in analysis.missing_rates.values())


def test_analysis_warns_on_imbalance_missing_values_and_duplicates() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0] * 5 + [2.0] * 100 + [None] * 30,
            "c": ["a"] * 135,
            "y": [1] * 11 + [0] * 124,
        }
    )
    analysis = analyze_dataset(frame, "y")
    assert analysis.target is not None and analysis.target.imbalanced
    assert analysis.target.imbalance_ratio == pytest.approx(124 / 11)
    assert analysis.missing_rates["x"] == pytest.approx(30 / 135, abs=1e-6)
    assert analysis.duplicate_rows > 100
    assert analysis.conflicting_duplicates >= 1  # x=1, c=a has both labels
    text = " ".join(analysis.warnings)
    assert "imbalance" in text and "missing" in text and "constant" in text and "duplicate" in text


def test_analysis_rejects_unknown_target(german: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="target column"):
        analyze_dataset(german, "nope")


def test_overlap_rows_counts_leakage(german: pd.DataFrame) -> None:
    train, test = german.iloc[:600], german.iloc[590:]
    assert overlap_rows(train, test) >= 10
    assert overlap_rows(german.iloc[:500], german.iloc[500:]) == 0  # the table has no duplicate rows

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from rag.errors import InvalidInputError
from rag.ml.slices import (
    OVERALL,
    PairedMetric,
    bootstrap_ci,
    bucketize,
    format_slice_table,
    paired_bootstrap_ci,
    roc_auc,
    roc_auc_batched,
    roc_auc_metric,
    slice_table,
    weighted_f1,
    weighted_f1_batched,
)


def test_bootstrap_ci_matches_a_hand_rolled_percentile_bootstrap() -> None:
    values = np.random.default_rng(3).normal(10, 2, size=200)
    low, high = bootstrap_ci(values, np.mean, n_resamples=500, seed=11)
    rng = np.random.default_rng(11)
    means = values[rng.integers(0, values.size, size=(500, values.size))].mean(axis=1)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert low < values.mean() < high
    # about 2 standard errors either side
    assert high - low == pytest.approx(2 * 1.96 * values.std() / math.sqrt(200), rel=0.2)


def test_bootstrap_ci_is_seeded_drops_nan_and_accepts_non_vectorised_statistics() -> None:
    values = [*np.random.default_rng(0).random(50).tolist(), float("nan")]
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values[:-1], seed=1)  # the NaN is dropped
    low, high = bootstrap_ci(values, lambda row: float(sorted(row)[len(row) // 2]), n_resamples=200, seed=0)
    assert 0.0 <= low <= high <= 1.0
    assert all(math.isnan(x) for x in bootstrap_ci([], seed=0))


def test_vectorised_auc_and_f1_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(20, 60))
    scores = np.round(rng.random((20, 60)) + 0.3 * y, 2)  # rounding creates ties
    pred = (scores > 0.6).astype(int)
    expected_auc = [roc_auc_score(y[i], scores[i]) for i in range(20)]
    expected_f1 = [f1_score(y[i], pred[i], average="weighted") for i in range(20)]
    assert roc_auc_batched(y, scores) == pytest.approx(expected_auc)
    assert weighted_f1_batched(y, pred) == pytest.approx(expected_f1)
    assert math.isnan(roc_auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])))
    assert weighted_f1(np.array([0, 1, 1]), np.array([1, 1, 1])) == pytest.approx(
        f1_score([0, 1, 1], [1, 1, 1], average="weighted", zero_division=0)
    )


def test_paired_bootstrap_uses_batched_and_plain_metric_alike() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 150)
    s = rng.random(150) + 0.5 * y
    batched = paired_bootstrap_ci(y, s, roc_auc, batched=roc_auc_batched, n_resamples=300, seed=4)
    plain = paired_bootstrap_ci(y, s, roc_auc_score, n_resamples=300, seed=4)
    assert batched == pytest.approx(plain)
    assert batched[0] < roc_auc(y, s) < batched[1]


def _frame(n_a: int = 100, n_b: int = 100, n_c: int = 10, acc_b: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    correct = np.concatenate([rng.random(n_a) < 0.9, rng.random(n_b) < acc_b, rng.random(n_c) < 0.9]).astype(float)
    group = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    return pd.DataFrame({"correct": correct, "group": group})


def test_slice_table_flags_a_worse_slice_and_skips_small_ones() -> None:
    frame = _frame()
    frame.loc[0, "group"] = None
    table = slice_table(frame, ["correct"], ["group"], min_size=30, n_resamples=500, seed=0)
    overall = table[table.slice_column == OVERALL].iloc[0]
    assert overall.value == pytest.approx(frame.correct.mean())
    rows = table.set_index("slice_value")
    assert rows.loc["b", "flagged"] and rows.loc["b", "status"] == "flagged"
    assert rows.loc["b", "gap"] == pytest.approx(overall.value - rows.loc["b", "value"])
    assert rows.loc["b", "ci_high"] < overall.value
    assert not rows.loc["a", "flagged"] and rows.loc["a", "status"] == "ok"
    assert rows.loc["c", "status"] == "too_small" and pd.isna(rows.loc["c", "value"])
    assert "<missing>" in rows.index and rows.loc["<missing>", "n"] == 1
    assert "flagged" in format_slice_table(table)


def test_a_big_gap_on_few_rows_is_not_flagged_without_evidence() -> None:
    correct = [1.0] * 64 + [0.0] * 16 + [1.0, 0.0, 1.0, 0.0, 1.0]  # a: 0.8, b: 0.6 on 5 rows
    frame = pd.DataFrame({"correct": correct, "group": ["a"] * 80 + ["b"] * 5})
    table = slice_table(frame, ["correct"], ["group"], min_size=5, n_resamples=500, seed=0)
    row = table[table.slice_value == "b"].iloc[0]
    assert row.gap > 0.1
    assert row.status == "gap_not_significant" and not row.flagged


def test_slice_table_with_lower_is_better_and_paired_metric() -> None:
    rng = np.random.default_rng(2)
    n = 800
    group = np.where(np.arange(n) < 600, "easy", "hard")
    y = rng.integers(0, 2, n)
    noise = np.where(group == "easy", 0.3, 3.0)
    score = y + rng.normal(0, noise)
    frame = pd.DataFrame({"y": y, "score": score, "group": group, "error": (score > 0.5) != y})
    table = slice_table(
        frame,
        ["error"],
        ["group"],
        metrics=[roc_auc_metric("y", "score")],
        higher_is_better={"error": False},
        n_resamples=300,
        seed=1,
    )
    auc = table[(table.metric == "roc_auc")].set_index("slice_value")
    assert auc.loc["all", "value"] == pytest.approx(roc_auc_score(y, score))
    assert auc.loc["hard", "flagged"] and not auc.loc["easy", "flagged"]
    err = table[(table.metric == "error")].set_index("slice_value")
    assert err.loc["hard", "flagged"] and err.loc["hard", "gap"] > 0  # more errors = worse
    assert table.equals(
        slice_table(
            frame,
            ["error"],
            ["group"],
            metrics=[roc_auc_metric("y", "score")],
            higher_is_better={"error": False},
            n_resamples=300,
            seed=1,
        )
    )


def test_undefined_metric_in_a_slice_is_reported_not_raised() -> None:
    frame = pd.DataFrame({"y": [1] * 40 + [0, 1] * 20, "s": np.linspace(0, 1, 80), "g": ["one"] * 40 + ["two"] * 40})
    metric = PairedMetric("auc", roc_auc, "y", "s", batched=roc_auc_batched)
    table = slice_table(frame, slice_columns=["g"], metrics=[metric], n_resamples=100)
    assert table.set_index("slice_value").loc["one", "status"] == "undefined"


def test_slice_table_rejects_unknown_columns() -> None:
    with pytest.raises(InvalidInputError, match="not in the table"):
        slice_table(pd.DataFrame({"a": [1]}), ["missing"], ["a"])


def test_bucketize_labels_half_open_buckets() -> None:
    labels = bucketize(pd.Series([18, 25, 30, 40, None]), [25, 35])
    assert labels.tolist() == ["<25", "[25, 35)", "[25, 35)", ">=35", "<missing>"]
    frame = pd.DataFrame({"age": bucketize(pd.Series(np.arange(100) % 60 + 10), [25, 35]), "ok": 1.0})
    table = slice_table(frame, ["ok"], ["age"], min_size=1, n_resamples=50)
    assert table.slice_value.tolist() == ["all", "<25", "[25, 35)", ">=35"]  # numeric, not alphabetical, order

"""The release gate: is this run worse than production on the same questions?

Samples are aligned by id (and question text hash). For each primary metric present in both runs:
difference = mean(current - baseline) over the questions both runs scored, with a paired bootstrap 95% CI
(``rag.ml.slices.paired_bootstrap_ci``: the same resampled questions for both). Without aligned questions
(e.g. a different ``--limit`` subset) the two means are bootstrapped independently.

A metric REGRESSES when its whole interval lies below zero (a drop larger than the noise), or when the
point difference is below ``-max_drop`` (``eval_gate_max_drop``, a drop too large to accept even when the
sample is too small to call it significant). The gate passes when no primary metric regresses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from rag.errors import InvalidInputError
from rag.ml.slices import paired_bootstrap_ci

PRIMARY_METRICS = (
    "ndcg_at_10",
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "answer_f1",
    "abstention_accuracy",
    "decision_accuracy",
)


class MetricComparison(BaseModel):
    metric: str
    baseline: float | None
    current: float | None
    difference: float | None = Field(description="current - baseline (mean over compared questions).")
    ci_low: float | None
    ci_high: float | None
    n: int = Field(description="Questions compared (paired) or the smaller run's count (unpaired).")
    paired: bool
    regressed: bool
    reason: str


class GateResult(BaseModel):
    passed: bool
    baseline_run_id: str
    baseline_config_version: str | None
    current_config_version: str
    dataset_hash: str
    paired_questions: int
    max_drop: float
    comparisons: list[MetricComparison]
    warnings: list[str] = Field(default_factory=list)


def _mean_difference(baseline: np.ndarray, current: np.ndarray) -> float:
    return float(np.mean(current - baseline))


def _mean_difference_batched(baseline: np.ndarray, current: np.ndarray) -> np.ndarray:
    return (current - baseline).mean(axis=1)


def _unpaired_ci(
    baseline: np.ndarray, current: np.ndarray, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    base = baseline[rng.integers(0, baseline.size, size=(n_resamples, baseline.size))].mean(axis=1)
    cur = current[rng.integers(0, current.size, size=(n_resamples, current.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(cur - base, [tail, 100 - tail])
    return float(low), float(high)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(np.nan, index=frame.index)


def paired_metric_differences(
    current: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    metrics: Sequence[str] = PRIMARY_METRICS,
    max_drop: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[list[MetricComparison], int, list[str]]:
    """Current minus baseline run, per gate metric: the mean of paired per-question differences with a paired
    bootstrap CI (unpaired means when no question aligns), the number of aligned questions, and warnings."""
    if max_drop < 0:
        raise InvalidInputError(f"max_drop must be >= 0, got {max_drop}")
    warnings: list[str] = []
    keys = ["id", "question_sha"] if {"question_sha"} <= set(current) & set(baseline) else ["id"]
    cur = current.assign(id=current["id"].astype(str))
    base = baseline.assign(id=baseline["id"].astype(str))
    merged = cur.merge(base, on=keys, suffixes=("", "__base"), how="inner")
    if len(merged) < len(cur):
        warnings.append(
            f"{len(cur) - len(merged)} of {len(cur)} questions are not in the baseline run: compared on the rest"
        )
    comparisons: list[MetricComparison] = []
    for metric in metrics:
        if metric not in cur or metric not in base:
            continue
        cur_all = _numeric(cur, metric).dropna().to_numpy(dtype=float)
        base_all = _numeric(base, metric).dropna().to_numpy(dtype=float)
        if cur_all.size == 0 or base_all.size == 0:
            continue
        pair_c = _numeric(merged, metric)
        pair_b = _numeric(merged, f"{metric}__base")
        both = pair_c.notna() & pair_b.notna()
        if both.sum() > 0:
            c, b = pair_c[both].to_numpy(dtype=float), pair_b[both].to_numpy(dtype=float)
            difference = _mean_difference(b, c)
            low, high = paired_bootstrap_ci(
                b, c, _mean_difference, batched=_mean_difference_batched, n_resamples=n_resamples, seed=seed
            )
            current_value, baseline_value, n, paired = float(c.mean()), float(b.mean()), int(both.sum()), True
        else:
            difference = float(cur_all.mean() - base_all.mean())
            low, high = _unpaired_ci(base_all, cur_all, n_resamples, seed)
            current_value, baseline_value = float(cur_all.mean()), float(base_all.mean())
            n, paired = int(min(cur_all.size, base_all.size)), False
        significant = math.isfinite(high) and high < 0
        too_large = difference < -max_drop
        regressed = significant or too_large
        if significant and too_large:
            reason = f"dropped {difference:+.4f}: the 95% CI is below 0 and the drop exceeds {max_drop:g}"
        elif significant:
            reason = f"dropped {difference:+.4f}: the 95% CI [{low:+.4f}, {high:+.4f}] is entirely below 0"
        elif too_large:
            reason = f"dropped {difference:+.4f}, more than the allowed {max_drop:g}"
        else:
            reason = f"no regression ({difference:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}])"
        comparisons.append(
            MetricComparison(
                metric=metric,
                baseline=baseline_value,
                current=current_value,
                difference=difference,
                ci_low=None if math.isnan(low) else low,
                ci_high=None if math.isnan(high) else high,
                n=n,
                paired=paired,
                regressed=regressed,
                reason=reason,
            )
        )
    if not comparisons:
        warnings.append("the two runs share no primary metric: nothing was compared")
    return comparisons, len(merged), warnings

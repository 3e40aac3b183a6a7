"""Look at the data before modelling: class balance, missing values, distribution shape, duplicates.

Run it on the training part only (after the split), so that nothing about the test set leaks into
modelling decisions; ``overlap_rows`` is the one check that looks at both parts (leakage).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from rag.errors import InvalidInputError

log = logging.getLogger(__name__)

IMBALANCE_WARN_RATIO = 10.0
SKEW_WARN = 1.0
NORMALITY_MIN_ROWS = 20
MAX_CATEGORIES_SHOWN = 20


class NumericSummary(BaseModel):
    """Shape of one numeric column; ``normality_p``: D'Agostino-Pearson K^2 test (None under 20 values)."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    skew: float | None
    kurtosis: float | None
    normality_p: float | None
    looks_normal: bool | None
    heavily_skewed: bool


class CategoricalSummary(BaseModel):
    """Categories of one column with their shares (top 20), and how many are rare (< 1 % of rows)."""

    n_categories: int
    shares: dict[str, float]
    rare_categories: int


class TargetSummary(BaseModel):
    counts: dict[str, int]
    shares: dict[str, float]
    imbalance_ratio: float = Field(description="Largest class count over smallest class count.")
    imbalanced: bool = Field(description=f"True above a {IMBALANCE_WARN_RATIO:g}x ratio.")


class DatasetAnalysis(BaseModel):
    """What the data looks like; ``warnings`` lists what needs attention before trusting a model."""

    rows: int
    columns: int
    target: TargetSummary | None
    missing_rates: dict[str, float]
    numeric: dict[str, NumericSummary]
    categorical: dict[str, CategoricalSummary]
    duplicate_rows: int = Field(description="Rows identical to an earlier row (all columns).")
    conflicting_duplicates: int = Field(description="Feature-identical rows whose targets disagree.")
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def summarise_numeric(values: pd.Series) -> NumericSummary:
    from scipy import stats

    clean = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if clean.size == 0:
        return NumericSummary(
            count=0,
            mean=None,
            std=None,
            min=None,
            max=None,
            skew=None,
            kurtosis=None,
            normality_p=None,
            looks_normal=None,
            heavily_skewed=False,
        )
    constant = bool(np.all(clean == clean[0]))
    skew = None if constant else _finite_or_none(float(stats.skew(clean)))
    kurt = None if constant else _finite_or_none(float(stats.kurtosis(clean)))
    normality_p = None
    if clean.size >= NORMALITY_MIN_ROWS and not constant:
        normality_p = _finite_or_none(float(stats.normaltest(clean).pvalue))
    return NumericSummary(
        count=int(clean.size),
        mean=float(clean.mean()),
        std=float(clean.std(ddof=1)) if clean.size > 1 else 0.0,
        min=float(clean.min()),
        max=float(clean.max()),
        skew=skew,
        kurtosis=kurt,
        normality_p=normality_p,
        looks_normal=None if normality_p is None else normality_p >= 0.05,
        heavily_skewed=skew is not None and abs(skew) > SKEW_WARN,
    )


def summarise_categorical(values: pd.Series) -> CategoricalSummary:
    counts = values.astype("object").where(values.notna(), "<missing>").astype(str).value_counts()
    shares = counts / max(int(counts.sum()), 1)
    return CategoricalSummary(
        n_categories=int(counts.size),
        shares={str(k): round(float(v), 6) for k, v in shares.head(MAX_CATEGORIES_SHOWN).items()},
        rare_categories=int((shares < 0.01).sum()),
    )


def is_numeric_column(values: pd.Series, max_categories: int = 10) -> bool:
    """Numeric dtype with over ``max_categories`` distinct values; low-cardinality codes are categories."""
    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)) and (
        values.nunique(dropna=True) > max_categories
    )


def analyze_dataset(frame: pd.DataFrame, target: str | None = None, *, max_categories: int = 10) -> DatasetAnalysis:
    """Summarise a table; warns about class imbalance (> 10x), missing values, skew and duplicates."""
    if frame.empty:
        raise InvalidInputError("the table has no rows", hint="check the CSV path and its header")
    if target is not None and target not in frame.columns:
        raise InvalidInputError(
            f"target column {target!r} is not in the table", hint=f"columns are {list(frame.columns)}"
        )
    warnings: list[str] = []
    target_summary = None
    if target is not None:
        counts = frame[target].astype("object").where(frame[target].notna(), "<missing>").astype(str).value_counts()
        ratio = float(counts.max() / counts.min()) if counts.min() > 0 else math.inf
        target_summary = TargetSummary(
            counts={str(k): int(v) for k, v in counts.items()},
            shares={str(k): round(float(v / counts.sum()), 6) for k, v in counts.items()},
            imbalance_ratio=ratio,
            imbalanced=ratio > IMBALANCE_WARN_RATIO,
        )
        if target_summary.imbalanced:
            warnings.append(
                f"class imbalance {ratio:.1f}x exceeds {IMBALANCE_WARN_RATIO:g}x: use stratified splits and "
                "weighted metrics, and read per-class results"
            )
        if "<missing>" in target_summary.counts:
            warnings.append(f"target {target!r} has {target_summary.counts['<missing>']} missing labels")

    missing = {str(c): round(float(frame[c].isna().mean()), 6) for c in frame.columns}
    for column, rate in missing.items():
        if rate > 0.2:
            warnings.append(f"column {column!r} is {rate:.0%} missing")

    numeric: dict[str, NumericSummary] = {}
    categorical: dict[str, CategoricalSummary] = {}
    for column in frame.columns:
        if column == target:
            continue
        if is_numeric_column(frame[column], max_categories):
            summary = summarise_numeric(frame[column])
            numeric[str(column)] = summary
            if summary.heavily_skewed:
                warnings.append(f"column {column!r} is heavily skewed (skew {summary.skew:.2f})")
        else:
            categorical[str(column)] = summarise_categorical(frame[column])
            if frame[column].nunique(dropna=True) <= 1:
                warnings.append(f"column {column!r} is constant: it carries no information")

    duplicate_rows = int(frame.duplicated().sum())
    conflicting = 0
    if target is not None:
        features = [c for c in frame.columns if c != target]
        if features:
            groups = frame.groupby(features, dropna=False, sort=False)[target].nunique(dropna=False)
            conflicting = int((groups > 1).sum())
    if duplicate_rows:
        warnings.append(f"{duplicate_rows} duplicate rows: they inflate metrics if they straddle the split")
    if conflicting:
        warnings.append(f"{conflicting} feature-identical groups carry different labels (label noise)")
    for message in warnings:
        log.info("data analysis: %s", message)
    return DatasetAnalysis(
        rows=len(frame),
        columns=frame.shape[1],
        target=target_summary,
        missing_rates=missing,
        numeric=numeric,
        categorical=categorical,
        duplicate_rows=duplicate_rows,
        conflicting_duplicates=conflicting,
        warnings=warnings,
    )


def overlap_rows(first: pd.DataFrame, second: pd.DataFrame, columns: list[str] | None = None) -> int:
    """Rows of ``second`` identical (on ``columns``) to some row of ``first``: train/test leakage."""
    cols = columns if columns is not None else [c for c in first.columns if c in second.columns]
    if not cols:
        return 0
    left = pd.util.hash_pandas_object(first[cols], index=False)
    right = pd.util.hash_pandas_object(second[cols], index=False)
    return int(right.isin(set(left.tolist())).sum())

"""Slice evaluation with bootstrap confidence intervals, for any model and any metric.

Two kinds of metric are supported, so that the tabular models and the RAG evaluation share this code:

- a per-sample column (correctness 0/1, a faithfulness score, a squared error): the metric is its mean, and
  slices are compared through ``metric_columns``;
- a non-decomposable metric such as ROC-AUC, computed from two columns by ``metric(y_true, y_score)``:
  pass a ``PairedMetric`` (``roc_auc_metric`` and ``weighted_f1_metric`` are ready-made, vectorised).

Bootstrap: percentile intervals over ``n_resamples`` resamples with replacement (default 1000, 95 %),
drawn from a seeded ``numpy.random.Generator`` so that the same inputs give bit-identical intervals.
NaN values of a per-sample metric mean "undetermined" and are dropped (their count is reported).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from rag.errors import InvalidInputError

OVERALL = "__overall__"
MISSING_SLICE = "<missing>"
# Resampled index matrices are built in chunks of at most this many cells (memory bound for large n).
_MAX_CELLS = 4_000_000

BatchedMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairedMetric:
    """A metric computed from a label column and a score/prediction column (not a mean of per-row values).

    ``batched`` computes the metric for many resamples at once from 2-D arrays (one resample per row);
    without it the bootstrap calls ``fn`` once per resample.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    y_true: str
    y_score: str
    higher_is_better: bool = True
    batched: BatchedMetric | None = None


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator per (seed, names): stable across processes (crc32, not the salted ``hash``)."""
    keys = [zlib.crc32(name.encode()) for name in names]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys]))


def _index_chunks(n: int, n_resamples: int, rng: np.random.Generator) -> Any:
    per_chunk = max(1, _MAX_CELLS // max(n, 1))
    done = 0
    while done < n_resamples:
        size = min(per_chunk, n_resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _percentile_interval(stats: np.ndarray, confidence: float, min_valid: float = 0.5) -> tuple[float, float]:
    valid = stats[np.isfinite(stats)]
    if stats.size == 0 or valid.size < min_valid * stats.size:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return (float(low), float(high))


def _check_confidence(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise InvalidInputError(f"n_resamples must be at least 1, got {n_resamples}")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (NaNs dropped).

    ``statistic`` is called as ``statistic(matrix, axis=1)`` on a (resamples x n) matrix when it accepts
    ``axis`` (numpy reductions do), otherwise once per resample. Returns ``(nan, nan)`` for empty input.
    """
    _check_confidence(confidence, n_resamples)
    data = np.asarray(values, dtype=float).ravel()
    data = data[~np.isnan(data)]
    if data.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    for idx in _index_chunks(data.size, n_resamples, rng):
        sample = data[idx]
        try:
            parts.append(np.asarray(statistic(sample, axis=1), dtype=float))
        except TypeError:
            parts.append(np.array([float(statistic(row)) for row in sample]))
    return _percentile_interval(np.concatenate(parts), confidence)


def paired_bootstrap_ci(
    y_true: Sequence[Any] | np.ndarray,
    y_score: Sequence[Any] | np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    batched: BatchedMetric | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of ``metric(y_true, y_score)``, resampling rows (pairs) together.

    Resamples where the metric is undefined (e.g. one class only for ROC-AUC) are dropped; if more than
    half are undefined the interval is ``(nan, nan)``: the sample is too small to say anything.
    """
    _check_confidence(confidence, n_resamples)
    truth = np.asarray(y_true)
    score = np.asarray(y_score)
    if truth.shape != score.shape or truth.ndim != 1:
        raise InvalidInputError(f"y_true and y_score must be 1-D and equally long, got {truth.shape} {score.shape}")
    if truth.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    for idx in _index_chunks(truth.size, n_resamples, rng):
        if batched is not None:
            parts.append(np.asarray(batched(truth[idx], score[idx]), dtype=float))
            continue
        chunk = np.empty(idx.shape[0])
        for i, row in enumerate(idx):
            try:
                chunk[i] = float(metric(truth[row], score[row]))
            except ValueError:
                chunk[i] = math.nan
        parts.append(chunk)
    return _percentile_interval(np.concatenate(parts), confidence)


# ---------------------------------------------------------------- ready-made vectorised metrics


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC of binary labels (0/1); NaN when only one class is present (instead of raising)."""
    return float(roc_auc_batched(np.asarray(y_true)[None, :], np.asarray(y_score)[None, :])[0])


def roc_auc_batched(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC-AUC per row via the Mann-Whitney rank sum (ties count one half, as scikit-learn does)."""
    from scipy.stats import rankdata

    truth = np.asarray(y_true).astype(bool)
    ranks = rankdata(np.asarray(y_score, dtype=float), axis=1)
    n_pos = truth.sum(axis=1).astype(float)
    n_neg = truth.shape[1] - n_pos
    rank_sum = np.where(truth, ranks, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def weighted_f1_batched(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Support-weighted F1 per row over the labels present in either array (F1 of an empty class is 0)."""
    truth = np.asarray(y_true)
    pred = np.asarray(y_pred)
    labels = np.unique(np.concatenate([np.unique(truth), np.unique(pred)]))
    n = truth.shape[1]
    total = np.zeros(truth.shape[0])
    for label in labels:
        is_true = truth == label
        is_pred = pred == label
        tp = (is_true & is_pred).sum(axis=1)
        support = is_true.sum(axis=1)
        denominator = support + is_pred.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(denominator > 0, 2.0 * tp / denominator, 0.0)
        total += f1 * support
    return total / n


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(weighted_f1_batched(np.asarray(y_true)[None, :], np.asarray(y_pred)[None, :])[0])


def roc_auc_metric(y_true: str, y_score: str, name: str = "roc_auc") -> PairedMetric:
    return PairedMetric(name=name, fn=roc_auc, y_true=y_true, y_score=y_score, batched=roc_auc_batched)


def weighted_f1_metric(y_true: str, y_pred: str, name: str = "f1_weighted") -> PairedMetric:
    return PairedMetric(name=name, fn=weighted_f1, y_true=y_true, y_score=y_pred, batched=weighted_f1_batched)


# ---------------------------------------------------------------- slice table


class SliceRow(BaseModel):
    """One metric on one slice. ``gap`` is positive when the slice is worse than overall."""

    metric: str
    slice_column: str
    slice_value: str
    n: int = Field(description="Rows in the slice.")
    n_undetermined: int = Field(0, description="Rows whose per-sample value was NaN (dropped).")
    value: float | None
    ci_low: float | None
    ci_high: float | None
    overall: float | None
    gap: float | None
    flagged: bool = Field(description="Worse than overall by more than max_gap and the CI excludes overall.")
    status: str = Field(description="ok | flagged | gap_not_significant | too_small | undefined | overall")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _slice_labels(series: pd.Series) -> pd.Series:
    labels = series.astype("object").where(series.notna(), MISSING_SLICE)
    return labels.map(str)


def _slice_order(values: pd.Series, labels: pd.Series) -> list[str]:
    """Category order for (ordered) categoricals such as ``bucketize`` output, sorted labels otherwise."""
    present = set(labels.unique())
    if isinstance(values.dtype, pd.CategoricalDtype):
        ordered = [str(c) for c in values.cat.categories if str(c) in present]
        return ordered + sorted(present - set(ordered))
    return sorted(present)


def bucketize(values: pd.Series, edges: Sequence[float], *, precision: int = 0) -> pd.Series:
    """Label numeric values by half-open buckets ``[e_i, e_i+1)``; below/above the edges get open labels.

    Use it to slice on a numeric column (age) with edges decided on the training data. The result is an
    ordered categorical, so slice tables list the buckets in numeric order.
    """
    cuts = sorted({float(e) for e in edges})
    if not cuts:
        raise InvalidInputError("bucketize needs at least one edge")
    fmt = f"{{:.{precision}f}}"
    names = [f"<{fmt.format(cuts[0])}"]
    names += [f"[{fmt.format(a)}, {fmt.format(b)})" for a, b in itertools.pairwise(cuts)]
    names.append(f">={fmt.format(cuts[-1])}")
    numeric = pd.to_numeric(values, errors="coerce")
    codes = np.searchsorted(np.asarray(cuts), numeric.to_numpy(dtype=float), side="right")
    labels = pd.Series([names[c] for c in codes], index=values.index, dtype="object")
    labels = labels.where(numeric.notna(), MISSING_SLICE)
    return pd.Series(pd.Categorical(labels, categories=[*names, MISSING_SLICE], ordered=True), index=values.index)


def _evaluate(
    part: pd.DataFrame,
    metric: str | PairedMetric,
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
    key: tuple[str, ...],
) -> tuple[float, tuple[float, float], int, int]:
    """(value, ci, n_used, n_undetermined) for one metric on one group of rows."""
    if isinstance(metric, PairedMetric):
        truth = part[metric.y_true].to_numpy()
        score = part[metric.y_score].to_numpy()
        try:
            value = float(metric.fn(truth, score))
        except ValueError:
            value = math.nan
        ci = paired_bootstrap_ci(
            truth,
            score,
            metric.fn,
            batched=metric.batched,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=int(_rng(seed, *key).integers(2**31)),
        )
        return value, ci, len(part), 0
    values = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float)
    undetermined = int(np.isnan(values).sum())
    clean = values[~np.isnan(values)]
    value = float(clean.mean()) if clean.size else math.nan
    ci = bootstrap_ci(
        clean,
        np.mean,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=int(_rng(seed, *key).integers(2**31)),
    )
    return value, ci, int(clean.size), undetermined


def slice_rows(
    frame: pd.DataFrame,
    metric_columns: Sequence[str] = (),
    slice_columns: Sequence[str] = (),
    min_size: int = 30,
    *,
    metrics: Sequence[PairedMetric] = (),
    max_gap: float = 0.1,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: Mapping[str, bool] | None = None,
) -> list[SliceRow]:
    """Overall and per-slice rows for each metric; see ``slice_table``."""
    if min_size < 1:
        raise InvalidInputError(f"min_size must be at least 1, got {min_size}")
    wanted = list(metric_columns) + [c for m in metrics for c in (m.y_true, m.y_score)] + list(slice_columns)
    missing = sorted({c for c in wanted if c not in frame.columns})
    if missing:
        raise InvalidInputError(f"columns {missing} are not in the table", hint=f"columns: {list(frame.columns)}")
    direction = dict(higher_is_better or {})
    all_metrics: list[str | PairedMetric] = [*metric_columns, *metrics]
    rows: list[SliceRow] = []
    for metric in all_metrics:
        name = metric.name if isinstance(metric, PairedMetric) else metric
        better_high = metric.higher_is_better if isinstance(metric, PairedMetric) else direction.get(name, True)
        overall, overall_ci, n_used, undetermined = _evaluate(
            frame, metric, n_resamples=n_resamples, confidence=confidence, seed=seed, key=(name, OVERALL)
        )
        rows.append(
            SliceRow(
                metric=name,
                slice_column=OVERALL,
                slice_value="all",
                n=len(frame),
                n_undetermined=undetermined,
                value=_none_if_nan(overall),
                ci_low=_none_if_nan(overall_ci[0]),
                ci_high=_none_if_nan(overall_ci[1]),
                overall=_none_if_nan(overall),
                gap=0.0 if n_used else None,
                flagged=False,
                status="overall",
            )
        )
        for column in slice_columns:
            labels = _slice_labels(frame[column])
            for label in _slice_order(frame[column], labels):
                rows.append(
                    _slice_row(
                        frame.loc[labels == label],
                        metric,
                        (name, str(column), label),
                        overall,
                        better_high,
                        min_size=min_size,
                        max_gap=max_gap,
                        n_resamples=n_resamples,
                        confidence=confidence,
                        seed=seed,
                    )
                )
    return rows


def _slice_row(
    part: pd.DataFrame,
    metric: str | PairedMetric,
    key: tuple[str, str, str],
    overall: float,
    better_high: bool,
    *,
    min_size: int,
    max_gap: float,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> SliceRow:
    """One slice (``key`` = metric name, column, label): too small, undefined, or its value, CI and gap."""
    name, column, label = key
    overall_or_none = _none_if_nan(overall)
    if len(part) < min_size:
        return SliceRow(
            metric=name,
            slice_column=column,
            slice_value=label,
            n=len(part),
            value=None,
            ci_low=None,
            ci_high=None,
            overall=overall_or_none,
            gap=None,
            flagged=False,
            status="too_small",
        )
    value, ci, _n_used, undetermined = _evaluate(
        part, metric, n_resamples=n_resamples, confidence=confidence, seed=seed, key=key
    )
    if not math.isfinite(value) or not math.isfinite(overall):
        return SliceRow(
            metric=name,
            slice_column=column,
            slice_value=label,
            n=len(part),
            n_undetermined=undetermined,
            value=_none_if_nan(value),
            ci_low=None,
            ci_high=None,
            overall=overall_or_none,
            gap=None,
            flagged=False,
            status="undefined",
        )
    gap = overall - value if better_high else value - overall
    excludes = ci[1] < overall if better_high else ci[0] > overall
    big_gap = gap > max_gap
    flagged = big_gap and bool(excludes) and math.isfinite(ci[0])
    return SliceRow(
        metric=name,
        slice_column=column,
        slice_value=label,
        n=len(part),
        n_undetermined=undetermined,
        value=value,
        ci_low=_none_if_nan(ci[0]),
        ci_high=_none_if_nan(ci[1]),
        overall=overall,
        gap=gap,
        flagged=flagged,
        status="flagged" if flagged else ("gap_not_significant" if big_gap else "ok"),
    )


def slice_table(
    frame: pd.DataFrame,
    metric_columns: Sequence[str] = (),
    slice_columns: Sequence[str] = (),
    min_size: int = 30,
    *,
    metrics: Sequence[PairedMetric] = (),
    max_gap: float = 0.1,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """The metric overall and for each value of each slice column, with bootstrap CIs and gap flags.

    - ``metric_columns``: per-sample value columns (metric = mean), e.g. ``correct`` in a RAG eval;
      ``higher_is_better`` maps a column to False for error-like values.
    - ``metrics``: ``PairedMetric`` objects for metrics such as ROC-AUC.
    - Slices under ``min_size`` rows are listed with status ``too_small`` and no value (too noisy to read).
    - A slice is ``flagged`` when it is worse than overall by more than ``max_gap`` AND its CI excludes the
      overall value; a big gap without that evidence is ``gap_not_significant``.
    Missing slice values form their own slice ``<missing>``. Columns of the result are ``SliceRow``'s fields.
    """
    rows = slice_rows(
        frame,
        metric_columns,
        slice_columns,
        min_size,
        metrics=metrics,
        max_gap=max_gap,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        higher_is_better=higher_is_better,
    )
    return pd.DataFrame([row.model_dump() for row in rows], columns=list(SliceRow.model_fields))


def format_slice_table(table: pd.DataFrame) -> str:
    """A Markdown table of a ``slice_table`` result (for model cards and reports)."""
    header = "| metric | slice | n | value | 95% CI | gap vs overall | status |\n|---|---|---:|---:|---|---:|---|\n"
    lines = []
    for row in table.itertuples(index=False):
        where = "overall" if row.slice_column == OVERALL else f"{row.slice_column}={row.slice_value}"
        value = "" if row.value is None or pd.isna(row.value) else f"{row.value:.3f}"
        has_ci = row.ci_low is not None and not pd.isna(row.ci_low)
        ci = f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" if has_ci else ""
        gap = "" if row.gap is None or pd.isna(row.gap) else f"{row.gap:+.3f}"
        lines.append(f"| {row.metric} | {where} | {row.n} | {value} | {ci} | {gap} | {row.status} |")
    return header + "\n".join(lines) + "\n"

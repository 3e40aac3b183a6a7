"""The statistics behind ``rag calibrate``: split, fit, calibrate, bound. Pure numpy (+ scipy's beta quantiles),
deterministic, so the same inputs give a bit-identical artifact.

- Model: L2-regularised logistic regression on standardised features, fitted by Newton's method (IRLS); optionally
  followed by isotonic regression (pool-adjacent-violators) of the outcome on the logistic output, fitted on
  out-of-fold logistic outputs, each block's value smoothed by a Beta(1, 1) prior (no block says 0 or 1). The
  kind, the L2 strength (1, 10, 100) and the feature set (none, compact, all) are chosen by 5-fold cross-validated
  Brier score on the fit split only, with the one-standard-error rule (Hastie, Tibshirani, Friedman, The Elements
  of Statistical Learning, 2nd ed., section 7.10): the simplest candidate within one standard error of the best,
  because a fit split of a few dozen answers cannot tell close candidates apart and the richer one then overfits.
  The standard error is that of the paired, answer-by-answer difference to the best (``paired_se``): both models
  score the same answers, and the spread of one model's squared errors (mostly which answers are hard) would hide
  a real difference between them. The constant is kept only when no model with features beats it.
- Threshold: Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021) with fixed-sequence testing. For each
  candidate threshold, from high to low, H0 "error rate among answered > target" is tested with the exact binomial
  test (p = P[Bin(n, target) <= errors], the Clopper-Pearson bound); the sequence stops at the first threshold not
  rejected at level delta, and the last rejected one is chosen. The sequence is built from the calibration
  confidences alone (never the labels): it starts at the highest threshold answering at least n_min questions,
  where n_min is the smallest n at which zero errors could reject, and steps down through the distinct
  confidences. With probability >= 1 - delta the chosen threshold's error rate among answered is <= target.
- Metrics: Brier score, expected calibration error (10 equal-width bins, weighted by bin size), reliability table,
  Clopper-Pearson intervals.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("fit", "calibration", "test")
ISOTONIC_PRIOR = 1.0  # Beta(1, 1) pseudo-counts per isotonic block


# ------------------------------------------------------------------------------------------------ split


def stratified_split(
    strata: Sequence[str], allowed: Sequence[Sequence[str]], seed: int, shares: dict[str, float]
) -> list[str]:
    """A split name per item: seeded, and within each (stratum, allowed splits) group proportional to ``shares``
    renormalised over the splits that group may enter (e.g. BEIR test-qrels questions may only be ``test``)."""
    out = [""] * len(strata)
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, (stratum, splits) in enumerate(zip(strata, allowed, strict=True)):
        groups.setdefault((stratum, tuple(splits)), []).append(i)
    for (stratum, splits), members in sorted(groups.items()):
        rng = random.Random(f"{seed}:{stratum}:{','.join(splits)}")
        order = list(members)
        rng.shuffle(order)
        total = sum(shares[s] for s in splits)
        bounds = np.cumsum([shares[s] / total for s in splits]) * len(order)
        start = 0
        for split, end in zip(splits, np.round(bounds).astype(int), strict=True):
            for i in order[start:end]:
                out[i] = split
            start = end
    return out


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per item, stratified by label, seeded."""
    folds = np.zeros(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = np.arange(len(idx)) % k
    return folds


# ------------------------------------------------------------------------------------------------ models


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 100) -> tuple[np.ndarray, float]:
    """Coefficients and intercept minimising log-loss + l2/2 * |coef|^2 (intercept unpenalised), by Newton steps."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.diag(np.r_[np.full(d, l2), 0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -40, 40)))
        grad = design.T @ (p - y) + penalty @ w
        hess = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w[:d], float(w[d])


def logistic_predict(x: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x @ coef + intercept, -40, 40)))


def fit_isotonic(scores: np.ndarray, y: np.ndarray, prior: float = 0.0) -> tuple[list[float], list[float]]:
    """Non-decreasing step fit of y on scores (pool adjacent violators); breakpoints for ``np.interp``.

    ``prior`` > 0 gives each block the value (successes + prior) / (n + 2 prior) (a Beta(prior, prior) prior),
    pooled until those values increase: a block of 7 right answers then says 0.89, not a certain 1.0, which a
    few dozen labelled answers cannot support.
    """
    order = np.argsort(scores, kind="mergesort")
    xs, ys = scores[order], y[order].astype(float)
    sums: list[float] = []
    weights: list[float] = []
    lows: list[float] = []
    highs: list[float] = []

    def value(k: int) -> float:
        return (sums[k] + prior) / (weights[k] + 2 * prior)

    for x_value, y_value in zip(xs, ys, strict=True):
        sums.append(y_value)
        weights.append(1.0)
        lows.append(x_value)
        highs.append(x_value)
        while len(sums) > 1 and (value(-2) >= value(-1) or highs[-2] == lows[-1]):
            sums[-2] += sums[-1]
            weights[-2] += weights[-1]
            highs[-2] = highs[-1]
            del sums[-1], weights[-1], lows[-1], highs[-1]
    values = [value(k) for k in range(len(sums))]
    bx: list[float] = []
    by: list[float] = []
    for value_, low, high in zip(values, lows, highs, strict=True):
        bx.extend([float(low), float(high)] if high > low else [float(low)])
        by.extend([float(value_)] * (2 if high > low else 1))
    if len(bx) == 1:
        bx, by = [bx[0] - 1e-6, bx[0] + 1e-6], [by[0], by[0]]
    return bx, by


def fit_model(x: np.ndarray, y: np.ndarray, kind: str, *, l2: float, seed: int) -> dict[str, Any]:
    """Standardisation + logistic (+ isotonic on out-of-fold logistic outputs): the artifact's parameters."""
    mean, scale = standardise(x)
    z = (x - mean) / scale
    coef, intercept = fit_logistic(z, y, l2)
    params: dict[str, Any] = {"mean": mean, "scale": scale, "coef": coef, "intercept": intercept, "isotonic": None}
    if kind == "logistic+isotonic":
        folds = stratified_folds(y, 5, seed)
        oof = np.zeros(len(y))
        for f in range(5):
            train, held = folds != f, folds == f
            if held.any() and len(set(y[train])) == 2:
                c, b = fit_logistic(z[train], y[train], l2)
                oof[held] = logistic_predict(z[held], c, b)
        bx, by = fit_isotonic(oof, y, prior=ISOTONIC_PRIOR)
        params["isotonic"] = {"x": bx, "y": by}
    return params


def predict_params(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    p = logistic_predict((x - params["mean"]) / params["scale"], params["coef"], params["intercept"])
    if params["isotonic"]:
        p = np.interp(p, params["isotonic"]["x"], params["isotonic"]["y"])
    return p


def cross_validate(x: np.ndarray, y: np.ndarray, kind: str, *, l2: float, seed: int, k: int = 5) -> dict[str, Any]:
    """Out-of-fold Brier (with its standard error over the answers) and ECE of one model kind on the fit split;
    ``squared`` holds each answer's out-of-fold squared error, for paired comparisons between candidates."""
    folds = stratified_folds(y, k, seed)
    oof = np.full(len(y), float(y.mean()))
    for f in range(k):
        train, held = folds != f, folds == f
        if held.any() and len(set(y[train])) == 2:
            oof[held] = predict_params(fit_model(x[train], y[train], kind, l2=l2, seed=seed), x[held])
    squared = (oof - y) ** 2
    se = float(np.std(squared, ddof=1) / math.sqrt(len(y))) if len(y) > 1 else 0.0
    return {"brier": brier(oof, y), "brier_se": se, "ece": ece(oof, y), "squared": squared}


def paired_se(squared: np.ndarray, reference: np.ndarray) -> float:
    """Standard error of the mean difference in squared error between two candidates on the same answers: what
    separates them, without the answer-to-answer spread they share (an answer hard for one is hard for both)."""
    diff = np.asarray(squared, float) - np.asarray(reference, float)
    return float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0


# ------------------------------------------------------------------------------------------------ metrics


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2)) if len(y) else math.nan


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width bins over [0, 1] (the last one closed): count, correct, mean confidence, accuracy."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        rows.append({
            "low": round(float(edges[b]), 4),
            "high": round(float(edges[b + 1]), 4),
            "n": n,
            "correct": int(y[mask].sum()),
            "mean_confidence": float(p[mask].mean()) if n else None,
            "accuracy": float(y[mask].mean()) if n else None,
        })
    return rows


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (bin share) x |accuracy - mean confidence|."""
    if not len(y):
        return math.nan
    rows = reliability_table(p, y, bins)
    return float(sum(r["n"] * abs(r["accuracy"] - r["mean_confidence"]) for r in rows if r["n"]) / len(y))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials."""
    from scipy.stats import beta

    if n == 0:
        return 0.0, 1.0
    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def binomial_p_value(errors: int, n: int, target: float) -> float:
    """P[Bin(n, target) <= errors]: small when the error rate among the n answered is credibly below target."""
    from scipy.stats import binom

    return float(binom.cdf(errors, n, target))


def select_threshold(
    confidence: np.ndarray, wrong: np.ndarray, target: float, delta: float, never: float
) -> dict[str, Any]:
    """Learn-then-Test fixed-sequence threshold for "error rate among answered <= target" (see the module doc).

    ``confidence`` and ``wrong`` are for the calibration questions the pipeline would answer; returns the
    threshold (``never`` when none is certified), the calibration counts behind it and the sequence length.
    """
    confidence, wrong = np.asarray(confidence, float), np.asarray(wrong, bool)
    if target >= 1.0:
        return {"threshold": 0.0, "feasible": True, "n_answered": len(wrong), "errors": int(wrong.sum()),
                "tests": 0}
    n_min = math.ceil(math.log(delta) / math.log(1 - target))
    levels = np.unique(confidence)[::-1]  # distinct confidences, high to low (labels unused)
    answered = np.array([(confidence >= lam).sum() for lam in levels])
    start = int(np.argmax(answered >= n_min)) if (answered >= n_min).any() else len(levels)
    chosen: dict[str, Any] = {"threshold": never, "feasible": False, "n_answered": 0, "errors": 0}
    tests = 0
    for lam in levels[start:]:
        mask = confidence >= lam
        n, k = int(mask.sum()), int(wrong[mask].sum())
        tests += 1
        if binomial_p_value(k, n, target) > delta:
            break
        chosen = {"threshold": float(lam), "feasible": True, "n_answered": n, "errors": k,
                  "upper_bound": clopper_pearson(k, n, 1 - 2 * delta)[1]}
    return chosen | {"tests": tests, "n_min": n_min}


def risk_coverage(confidence: np.ndarray, wrong: np.ndarray, answerable: np.ndarray) -> list[dict[str, float]]:
    """For every threshold: share of candidate answers kept, error rate among them, share of answerable answered."""
    confidence, wrong = np.asarray(confidence, float), np.asarray(wrong, bool)
    answerable = np.asarray(answerable, bool)
    total_answerable = max(int(answerable.sum()), 1)
    out = []
    for lam in np.unique(np.r_[confidence, 0.0])[::-1]:
        mask = confidence >= lam
        n = int(mask.sum())
        out.append({
            "threshold": float(lam),
            "answered": n,
            "coverage": n / max(len(confidence), 1),
            "error_rate": float(wrong[mask].mean()) if n else 0.0,
            "answerable_coverage": int((mask & answerable).sum()) / total_answerable,
        })
    return out

"""Drift of the live RAG query stream, read from the API's JSON-lines query log.

Each log line is one answered query (``rag.ml.query_log.QueryLogRecord``, the contract the API writes).
Two windows of records are compared:

- ``question_chars`` (question length): KS and PSI;
- ``top_score`` (best dense cosine similarity; missing when retrieval returned nothing): KS and PSI, the
  PSI missing bin catching a change in how often nothing is retrieved;
- ``abstained``: chi-square on the 2 x 2 table (the two-proportion test; Fisher's exact when sparse);
- ``query_embedding``: (a) a domain classifier, a linear model trained to tell current from reference
  embeddings; its cross-validated (out-of-fold) ROC-AUC is about 0.5 when the windows are exchangeable,
  and its p-value comes from a label-permutation test (see ``domain_classifier_test`` for why not a
  rank test). It counts as drift when p < the Bonferroni alpha AND the AUC is at least ``min_auc``
  (0.55), so that huge windows do not alarm on a negligible separation.
  (b) PSI on the top principal components, with bins fixed on the reference window's projections
  (the PCA itself is fitted on both windows by default: see ``principal_component_psi``).

Windows: by count (the current window is the last ``current_size`` records, the reference the
``reference_size`` records just before it) or by time (explicit ISO-8601 intervals). Embeddings are
compared only when both windows used one embedding model; otherwise the embedding tests are skipped
and the report says why (a model change is a deployment event, not drift).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.errors import InvalidInputError
from rag.ml.drift import (
    DEFAULT_ALPHA,
    DriftReport,
    DriftResult,
    Histogram,
    StatOutcome,
    build_report,
    feature_results,
    histogram,
    population_stability_index,
)
from rag.ml.query_log import (
    FeedbackLog,
    FeedbackRecord,
    QueryLogRecord,
    feedback_log_path,
    feedback_summary,
    read_query_log,
)

DEFAULT_REFERENCE_SIZE = 500
DEFAULT_CURRENT_SIZE = 200
DEFAULT_COMPONENTS = 5
DEFAULT_MIN_AUC = 0.55
CLASSIFIER_FOLDS = 5
DEFAULT_PERMUTATIONS = 1000
WindowBy = Literal["count", "time"]
PcaFit = Literal["pooled", "reference"]


def parse_interval(text: str) -> tuple[datetime, datetime]:
    """``START/END`` in ISO 8601 (``2025-01-01T00:00:00Z/2025-01-08T00:00:00Z``); naive times are UTC."""
    parts = text.split("/")
    if len(parts) != 2:
        raise InvalidInputError(f"time window {text!r} is not START/END", hint="e.g. 2025-01-01T00:00Z/2025-01-08")
    try:
        start, end = (datetime.fromisoformat(p.strip()) for p in parts)
    except ValueError as exc:
        raise InvalidInputError(f"time window {text!r}: {exc}", hint="use ISO 8601 times") from None
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if end <= start:
        raise InvalidInputError(f"time window {text!r} ends before it starts")
    return start, end


def _describe(
    records: Sequence[QueryLogRecord], source: str, how: str, feedback: Mapping[str, FeedbackRecord] | None = None
) -> dict[str, Any]:
    stamps = [r.timestamp() for r in records]
    return {
        "source": source,
        "window": how,
        "records": len(records),
        "from": min(stamps).isoformat() if stamps else None,
        "to": max(stamps).isoformat() if stamps else None,
        "versions": {
            key: dict(Counter(str(getattr(r.versions, key)) for r in records))
            for key in ("index", "embedding_model", "generator", "prompt")
        },
        "feedback": feedback_summary(records, feedback or {}),
    }


def select_count_windows(
    records: Sequence[QueryLogRecord], reference_size: int, current_size: int
) -> tuple[list[QueryLogRecord], list[QueryLogRecord]]:
    """The last ``current_size`` records, and the ``reference_size`` records just before them."""
    if reference_size < 1 or current_size < 1:
        raise InvalidInputError("window sizes must be at least 1")
    needed = reference_size + current_size
    if len(records) < needed:
        raise InvalidInputError(
            f"the query log holds {len(records)} records; count windows of {reference_size} + {current_size} "
            f"need {needed}",
            hint="lower --reference-size/--current-size or wait for more traffic",
        )
    current = list(records[-current_size:])
    reference = list(records[-needed:-current_size])
    return reference, current


def select_time_window(records: Sequence[QueryLogRecord], start: datetime, end: datetime) -> list[QueryLogRecord]:
    """Records with ``start <= ts < end``."""
    return [r for r in records if start <= r.timestamp() < end]


def _out_of_fold_ridge(features: np.ndarray, targets: np.ndarray, folds: np.ndarray, ridge: float) -> np.ndarray:
    """Out-of-fold predictions of ridge regression for many target columns at once (n x B)."""
    scores = np.empty_like(targets, dtype=float)
    identity = np.eye(features.shape[1])
    for fold in np.unique(folds):
        test = folds == fold
        train_x, train_y = features[~test], targets[~test]
        x_mean, y_mean = train_x.mean(axis=0), train_y.mean(axis=0)
        centred = train_x - x_mean
        weights = np.linalg.solve(centred.T @ centred + ridge * identity, centred.T @ (train_y - y_mean))
        scores[test] = (features[test] - x_mean) @ weights + y_mean
    return scores


def domain_classifier_test(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    seed: int = 0,
    folds: int = CLASSIFIER_FOLDS,
    permutations: int = DEFAULT_PERMUTATIONS,
    ridge: float = 1.0,
) -> StatOutcome:
    """Can a linear classifier tell current from reference vectors? Out-of-fold ROC-AUC + permutation p-value.

    The classifier is ridge regression on the window label (a regularised least-squares linear
    discriminant); every row is scored by a model fitted on the other folds. The p-value is a label
    permutation test with the same folds: (1 + #{permuted AUC >= observed}) / (1 + permutations).
    A permutation test is needed because query logs hold clusters of near-identical questions: a
    cross-validated classifier exploits chance label imbalance inside a cluster, so its out-of-fold AUC
    is above 0.5 under no drift, and a rank test that assumes independent scores fires too often
    (measured: 14 % instead of 5 %). Ridge regression has a closed form, so all permutations are
    scored at once with a few matrix solves.
    """
    from threadpoolctl import threadpool_limits

    from rag.ml.slices import roc_auc_batched

    n_ref, n_cur = len(reference), len(current)
    if min(n_ref, n_cur) < folds * 2:
        return StatOutcome(math.nan, math.nan, skipped=f"needs at least {folds * 2} embeddings per window")
    rng = np.random.default_rng(seed)
    features = np.vstack([reference, current]).astype(float)
    labels = np.concatenate([np.zeros(n_ref), np.ones(n_cur)])
    fold_of = rng.permutation(np.arange(len(labels)) % folds)
    permuted = np.stack([rng.permutation(labels) for _ in range(permutations)], axis=1)
    targets = np.column_stack([labels, permuted])
    with threadpool_limits(limits=1):  # small solves: threads cost more than they save
        scores = _out_of_fold_ridge(features, targets, fold_of, ridge)
    aucs = roc_auc_batched(targets.T, scores.T)
    observed, null = float(aucs[0]), aucs[1:]
    p_value = float((1 + np.sum(null >= observed)) / (1 + permutations))
    return StatOutcome(
        observed,
        p_value,
        {
            "method": f"ridge discriminant, {folds}-fold out-of-fold ROC-AUC, {permutations}-permutation p-value",
            "folds": folds,
            "permutations": permutations,
            "null_auc_mean": round(float(null.mean()), 6),
            "null_auc_95th": round(float(np.quantile(null, 0.95)), 6),
            "min_p_value": round(1 / (1 + permutations), 6),
        },
    )


def principal_component_psi(
    reference: np.ndarray,
    current: np.ndarray,
    n_components: int = DEFAULT_COMPONENTS,
    fit_on: PcaFit = "pooled",
) -> list[tuple[str, StatOutcome, np.ndarray, np.ndarray]]:
    """PSI per principal component (bins from the reference's projections); returns the projections too.

    ``fit_on="pooled"`` (default) fits the PCA on both windows together: a PCA fitted on a few hundred
    reference vectors in 384 dimensions overfits them (a fresh sample from the same distribution has
    10-20 % less variance along those axes, so PSI reads noise as drift: measured 10 % vs 2 % false
    alarms on 200/100 windows). Pooling treats both windows alike under no drift, and a real shift adds
    variance along its own direction, which the pooled PCA picks up. ``"reference"`` fits the reference
    only (use with large reference windows).
    """
    from sklearn.decomposition import PCA

    basis = reference if fit_on == "reference" else np.vstack([reference, current])
    k = min(n_components, basis.shape[1], max(len(basis) - 1, 1))
    pca = PCA(n_components=k, svd_solver="full").fit(basis)
    ref_proj, cur_proj = pca.transform(reference), pca.transform(current)
    out = []
    for i in range(k):
        outcome = population_stability_index(ref_proj[:, i], cur_proj[:, i], kind="numeric")
        outcome.details["explained_variance_ratio"] = round(float(pca.explained_variance_ratio_[i]), 6)
        out.append((f"query_embedding.pc{i + 1}", outcome, ref_proj[:, i], cur_proj[:, i]))
    return out


def _embeddings(records: Sequence[QueryLogRecord]) -> np.ndarray | None:
    vectors = [r.query_embedding for r in records if r.query_embedding]
    if not vectors:
        return None
    dims = {len(v) for v in vectors}
    if len(dims) != 1:
        raise InvalidInputError(f"query embeddings have mixed dimensions {sorted(dims)} within one window")
    return np.asarray(vectors, dtype=float)


def _result(feature: str, test: str, outcome: StatOutcome, n_ref: int, n_cur: int, **extra: Any) -> DriftResult:
    def clean(value: float | None) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    return DriftResult(
        feature=feature,
        test=test,
        kind="embedding",
        statistic=clean(outcome.statistic),
        p_value=clean(outcome.p_value),
        uses_p_value=outcome.p_value is not None or test == "domain_classifier",
        n_reference=n_ref,
        n_current=n_cur,
        skipped=outcome.skipped,
        details=outcome.details,
        **extra,
    )


def compare_query_windows(
    reference: Sequence[QueryLogRecord],
    current: Sequence[QueryLogRecord],
    *,
    reference_info: dict[str, Any] | None = None,
    current_info: dict[str, Any] | None = None,
    alpha: float = DEFAULT_ALPHA,
    thresholds: Mapping[str, float] | None = None,
    n_components: int = DEFAULT_COMPONENTS,
    pca_fit: PcaFit = "pooled",
    min_auc: float = DEFAULT_MIN_AUC,
    seed: int = 0,
    with_histograms: bool = True,
    feedback: Mapping[str, FeedbackRecord] | None = None,
) -> DriftReport:
    """Drift report between two windows of query records (see the module docstring for the tests).

    With ``feedback`` (request_id → latest rating), the negative-feedback rate of each window is compared too.
    """
    if not reference or not current:
        raise InvalidInputError(
            f"both windows need records (reference {len(reference)}, current {len(current)})",
            hint="widen the windows or check the time ranges against the log",
        )
    warnings: list[str] = []
    histograms: dict[str, Histogram] = {}
    results = _scalar_results(reference, current, histograms if with_histograms else None)
    results += _embedding_results(
        reference, current, n_components, pca_fit, min_auc, seed, warnings, histograms if with_histograms else None
    )
    results += _feedback_results(reference, current, feedback or {}, histograms if with_histograms else None)
    versions_changed = [
        key
        for key in ("index", "embedding_model", "generator", "prompt")
        if {str(getattr(r.versions, key)) for r in reference} != {str(getattr(r.versions, key)) for r in current}
    ]
    if versions_changed:
        warnings.append(
            f"versions differ between the windows ({', '.join(versions_changed)}): a deployment may explain a "
            "shift in scores or abstention"
        )
    return build_report(
        results,
        kind="query_log",
        reference=reference_info or {"records": len(reference)},
        current=current_info or {"records": len(current)},
        alpha=alpha,
        thresholds={**dict(thresholds or {}), "domain_classifier_min_auc": min_auc},
        histograms=histograms,
        warnings=warnings,
    )


def _scalar_results(
    reference: Sequence[QueryLogRecord], current: Sequence[QueryLogRecord], histograms: dict[str, Histogram] | None
) -> list[DriftResult]:
    """Question length, top score (KS, PSI) and abstention (chi-squared); fills ``histograms`` when given."""
    results: list[DriftResult] = []
    scalar = {
        "question_chars": ([r.question_chars for r in reference], [r.question_chars for r in current], "numeric"),
        "top_score": (
            [np.nan if r.top_score is None else r.top_score for r in reference],
            [np.nan if r.top_score is None else r.top_score for r in current],
            "numeric",
        ),
        "abstained": ([r.abstained for r in reference], [r.abstained for r in current], "categorical"),
    }
    tests_for: dict[str, tuple[str, ...]] = {
        "question_chars": ("ks", "psi"),
        "top_score": ("ks", "psi"),
        "abstained": ("chi2",),
    }
    for name, (ref_values, cur_values, kind) in scalar.items():
        ref_arr, cur_arr = np.asarray(ref_values, dtype=object), np.asarray(cur_values, dtype=object)
        results += feature_results(name, ref_arr, cur_arr, kind, tests_for[name])  # type: ignore[arg-type]
        if histograms is not None:
            histograms[name] = histogram(ref_arr, cur_arr, kind)  # type: ignore[arg-type]

    return results


def _feedback_results(
    reference: Sequence[QueryLogRecord],
    current: Sequence[QueryLogRecord],
    feedback: Mapping[str, FeedbackRecord],
    histograms: dict[str, Histogram] | None,
) -> list[DriftResult]:
    """Negative-feedback share of the rated answers (chi-squared), when both windows hold ratings."""
    ref = [feedback[r.request_id].rating == "down" for r in reference if r.request_id in feedback]
    cur = [feedback[r.request_id].rating == "down" for r in current if r.request_id in feedback]
    if not ref or not cur:
        return []
    ref_arr, cur_arr = np.asarray(ref, dtype=object), np.asarray(cur, dtype=object)
    if histograms is not None:
        histograms["negative_feedback"] = histogram(ref_arr, cur_arr, "categorical")
    return feature_results("negative_feedback", ref_arr, cur_arr, "categorical", ("chi2",))


def _embedding_results(
    reference: Sequence[QueryLogRecord],
    current: Sequence[QueryLogRecord],
    n_components: int,
    pca_fit: PcaFit,
    min_auc: float,
    seed: int,
    warnings: list[str],
    histograms: dict[str, Histogram] | None,
) -> list[DriftResult]:
    """Domain classifier on the query embeddings plus PSI per principal component, or one skipped result."""
    results: list[DriftResult] = []
    models = {str(r.versions.embedding_model) for r in [*reference, *current] if r.query_embedding}
    ref_emb, cur_emb = _embeddings(reference), _embeddings(current)
    skip_reason = None
    if ref_emb is None or cur_emb is None:
        skip_reason = "no query embeddings logged in one window"
    elif len(models) > 1:
        skip_reason = f"embedding model changed between or within windows ({sorted(models)}): not comparable"
        warnings.append(f"query embeddings come from several models {sorted(models)}; embedding drift skipped")
    elif ref_emb.shape[1] != cur_emb.shape[1]:
        skip_reason = f"embedding dimensions differ ({ref_emb.shape[1]} vs {cur_emb.shape[1]})"
    if skip_reason is not None:
        n_ref = 0 if ref_emb is None else len(ref_emb)
        n_cur = 0 if cur_emb is None else len(cur_emb)
        results.append(
            _result(
                "query_embedding",
                "domain_classifier",
                StatOutcome(math.nan, math.nan, skipped=skip_reason),
                n_ref,
                n_cur,
                min_effect=min_auc,
            )
        )
    else:
        from threadpoolctl import threadpool_limits

        assert ref_emb is not None and cur_emb is not None
        # One BLAS thread: these are small problems where thread start-up and contention cost more than
        # they save (measured 5x faster on a busy 2-core machine), and results stay bit-reproducible.
        with threadpool_limits(limits=1):
            outcome = domain_classifier_test(ref_emb, cur_emb, seed=seed)
            components = principal_component_psi(ref_emb, cur_emb, n_components, pca_fit)
        results.append(
            _result("query_embedding", "domain_classifier", outcome, len(ref_emb), len(cur_emb), min_effect=min_auc)
        )
        for feature, pc_outcome, ref_proj, cur_proj in components:
            psi_result = _result(feature, "psi", pc_outcome, len(ref_emb), len(cur_emb))
            results.append(psi_result.model_copy(update={"kind": "numeric", "uses_p_value": False}))
            if histograms is not None:
                histograms[feature] = histogram(ref_proj, cur_proj, "numeric")
    return results


def query_log_drift(
    reference_path: Path,
    current_path: Path | None = None,
    *,
    window_by: WindowBy = "count",
    reference_size: int = DEFAULT_REFERENCE_SIZE,
    current_size: int = DEFAULT_CURRENT_SIZE,
    reference_window: str | None = None,
    current_window: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    thresholds: Mapping[str, float] | None = None,
    n_components: int = DEFAULT_COMPONENTS,
    pca_fit: PcaFit = "pooled",
    min_auc: float = DEFAULT_MIN_AUC,
    seed: int = 0,
) -> DriftReport:
    """Build the two windows from one log (count or time windows) or two logs, and compare them.

    - Two files: every record of each (optionally narrowed by the time windows).
    - One file, ``window_by="count"``: last ``current_size`` records vs the ``reference_size`` before them.
    - One file, ``window_by="time"``: ``reference_window`` vs ``current_window`` (``START/END``); without a
      current window, everything after the reference window's end.
    """
    ref_log = read_query_log(reference_path)
    feedback = FeedbackLog(feedback_log_path(reference_path)).latest_by_request()
    warnings: list[str] = []
    if ref_log.malformed:
        warnings.append(f"{ref_log.malformed} malformed lines skipped in {reference_path}")
    if current_path is not None:
        cur_log = read_query_log(current_path)
        if cur_log.malformed:
            warnings.append(f"{cur_log.malformed} malformed lines skipped in {current_path}")
        reference, current = ref_log.records, cur_log.records
        ref_how, cur_how = "whole file", "whole file"
        if reference_window:
            reference = select_time_window(reference, *parse_interval(reference_window))
            ref_how = reference_window
        if current_window:
            current = select_time_window(current, *parse_interval(current_window))
            cur_how = current_window
        ref_source, cur_source = str(reference_path), str(current_path)
    elif window_by == "count":
        if reference_window or current_window:
            raise InvalidInputError("time windows need --window-by time")
        reference, current = select_count_windows(ref_log.records, reference_size, current_size)
        ref_how = f"{reference_size} records before the current window"
        cur_how = f"last {current_size} records"
        ref_source = cur_source = str(reference_path)
    elif window_by == "time":
        if not reference_window:
            raise InvalidInputError("--window-by time needs --reference-window START/END")
        ref_start, ref_end = parse_interval(reference_window)
        reference = select_time_window(ref_log.records, ref_start, ref_end)
        ref_how = reference_window
        if current_window:
            current = select_time_window(ref_log.records, *parse_interval(current_window))
            cur_how = current_window
        else:
            current = [r for r in ref_log.records if r.timestamp() >= ref_end]
            cur_how = f"after {ref_end.isoformat()}"
        ref_source = cur_source = str(reference_path)
    else:
        raise InvalidInputError(f"unknown window kind {window_by!r}", hint="use count or time")
    report = compare_query_windows(
        reference,
        current,
        reference_info=_describe(reference, ref_source, ref_how, feedback) if reference else {"records": 0},
        current_info=_describe(current, cur_source, cur_how, feedback) if current else {"records": 0},
        alpha=alpha,
        thresholds=thresholds,
        n_components=n_components,
        pca_fit=pca_fit,
        min_auc=min_auc,
        seed=seed,
        feedback=feedback,
    )
    if warnings:
        report = report.model_copy(update={"warnings": [*warnings, *report.warnings]})
    return report

"""Reproducible tabular training with held-out evaluation, slices, a model card and MLflow tracking.

Experiment discipline (docs: ``rag train --help``):

1. The CSV is hashed (sha256 = data version) and split FIRST: a stratified, seeded train+validation /
   test split (80/20 by default). Nothing below looks at the test rows until step 4.
2. Dataset analysis (class balance, missing values, skew, duplicates) runs on train+validation only;
   the one check that reads both parts counts feature-identical rows shared with the test set (leakage).
3. Hyperparameters: grid search with stratified, shuffled, seeded k-fold CV (k = 5) on train+validation,
   scored by ROC-AUC. "Validation" metrics are the out-of-fold predictions of the chosen configuration:
   every train+validation row is scored by a model that never saw it.
4. The chosen configuration is refitted on all train+validation rows and the test set is scored ONCE:
   ROC-AUC, weighted F1, accuracy and Brier score with seeded bootstrap 95 % CIs, a reliability diagram,
   a ROC curve, and the slice table for the declared sensitive columns (numeric ones in quartile
   buckets whose edges come from train+validation).
5. MLflow: params (model, grid, best values, seed, data sha256, split), metrics with CI bounds,
   artifacts (config, analysis, CV results, plots, slices, model card, serving schema, held-out rows for
   the promotion gate), the model with signature and input example; the version is registered and gets
   the alias ``staging``.

Same data + same config + same seed => bit-identical metrics (all randomness is seeded; n_jobs=1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import tempfile
import time
import warnings as warnings_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from rag.errors import InvalidInputError
from rag.hashing import file_sha256
from rag.ml.analysis import DatasetAnalysis, analyze_dataset, overlap_rows
from rag.ml.seed import set_seed
from rag.ml.serving import FeatureSchema, ServingInfo, calibration_bins, infer_feature_schema
from rag.ml.slices import (
    SliceRow,
    bootstrap_ci,
    bucketize,
    paired_bootstrap_ci,
    roc_auc,
    roc_auc_batched,
    roc_auc_metric,
    slice_rows,
    weighted_f1,
    weighted_f1_batched,
)
from rag.settings import Settings

log = logging.getLogger(__name__)

ModelKind = Literal["rf", "gbm", "logreg"]
HELDOUT_ARTIFACT = "heldout/test.csv"
SERVING_ARTIFACT = "serving.json"
ROW_ID = "__row_id__"


class TrainingConfig(BaseModel):
    """Everything that determines a training run; logged as ``config.json`` so a run can be redone from it."""

    data: Path
    target: str
    model: ModelKind = "rf"
    sensitive: list[str] | None = Field(
        None,
        description="Columns to slice the test metrics by; None = the columns named like protected attributes.",
    )
    drop: list[str] = Field(default_factory=list, description="Columns not used as features.")
    seed: int = Field(42, ge=0, lt=2**32)
    test_size: float = Field(0.2, gt=0.05, lt=0.5)
    cv_folds: int = Field(5, ge=2, le=20)
    n_resamples: int = Field(1000, ge=100, le=100_000)
    min_slice_size: int = Field(30, ge=1)
    max_slice_gap: float = Field(0.1, ge=0, le=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="Decision threshold on the positive probability.")
    positive_label: str | None = Field(None, description="Default: 1 for 0/1 targets, else the last label sorted.")
    experiment: str | None = Field(None, description="MLflow experiment; default tabular-<csv stem>.")
    registered_name: str | None = Field(None, description="Registry name; default <csv stem>-<target>.")

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"tabular-{self.data.stem}"

    @property
    def model_name(self) -> str:
        return self.registered_name or f"{self.data.stem}-{self.target}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Column names that usually hold protected attributes: sliced by default so that a disparity is never missed
# just because nobody asked (``--sensitive`` replaces the list).
SENSITIVE_NAMES = frozenset(
    {"sex", "gender", "age", "race", "ethnicity", "religion", "nationality", "marital_status", "disability"}
)


def detect_sensitive(columns: list[str], target: str) -> list[str]:
    return [c for c in columns if c != target and str(c).strip().lower() in SENSITIVE_NAMES]


class MetricCI(BaseModel):
    value: float | None
    ci_low: float | None
    ci_high: float | None


class TrainingResult(BaseModel):
    """What a run produced; ``to_dict`` is the ``rag train --json`` output."""

    run_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str
    model_name: str
    model_version: str
    alias: str
    model_type: str
    best_params: dict[str, Any]
    cv_roc_auc_mean: float
    cv_roc_auc_std: float
    data: dict[str, Any]
    metrics: dict[str, dict[str, MetricCI]]
    slices: list[SliceRow]
    flagged_slices: list[str]
    warnings: list[str]
    model_sha256: str = Field(description="sha256 of the stored model file (integrity of the artifact).")
    model_content_sha256: str = Field(
        description="sha256 of the pickled estimator: equal for bit-identical models (reproducibility)."
    )
    model_card: str = Field(description="Artifact path of the model card inside the run.")
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- data


def model_content_sha256(model: Any) -> str:
    """Hash of the estimator's state; the skops file itself embeds object ids, so it differs per process."""
    import pickle

    return hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()


def load_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInputError(f"data file {path} does not exist", hint="pass a CSV with a header row")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"{path} is not a readable CSV: {exc}") from None
    if frame.empty:
        raise InvalidInputError(f"{path} has no rows")
    return frame


def encode_target(values: pd.Series, positive_label: str | None) -> tuple[np.ndarray, str, str]:
    """0/1 labels for a binary target; returns (labels, positive label, negative label) as strings."""
    labels = sorted({str(v) for v in values.unique()})
    if len(labels) != 2:
        raise InvalidInputError(
            f"the target has {len(labels)} classes {labels[:10]}; only binary classification is supported"
        )
    if positive_label is None:
        positive = "1" if set(labels) == {"0", "1"} else labels[-1]
    else:
        positive = str(positive_label)
        if positive not in labels:
            raise InvalidInputError(f"positive label {positive!r} is not one of the target's labels {labels}")
    negative = labels[0] if labels[1] == positive else labels[1]
    return (values.astype(str) == positive).to_numpy(dtype=int), positive, negative


# ---------------------------------------------------------------- models


def build_pipeline(kind: ModelKind, numeric: list[str], categorical: list[str], seed: int) -> Any:
    """Imputation + scaling/one-hot, then the estimator; one pipeline so serving applies the same steps."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    preprocess = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ],
        remainder="drop",
    )
    estimators: dict[str, Any] = {
        "rf": RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1),
        "gbm": HistGradientBoostingClassifier(max_iter=150, early_stopping=False, random_state=seed),
        "logreg": LogisticRegression(max_iter=5000),
    }
    return Pipeline([("preprocess", preprocess), ("model", estimators[kind])])


# Types the skops serialiser must be told to trust, per estimator (reviewed: our own estimators' internals;
# skops refuses unknown types on load instead of executing pickle code).
SKOPS_TRUSTED_TYPES: dict[str, list[str]] = {
    "rf": ["numpy.dtype", "sklearn.tree._tree.Tree"],
    "gbm": ["numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    "logreg": ["numpy.dtype"],
}

PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "rf": {"model__max_depth": [None, 8], "model__min_samples_leaf": [1, 5]},
    "gbm": {"model__learning_rate": [0.03, 0.1], "model__max_leaf_nodes": [7, 15]},
    "logreg": {"model__C": [0.01, 0.1, 1.0, 10.0]},
}


def _to_feature_frame(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> pd.DataFrame:
    """Feature columns with categoricals as ``object`` strings (stable across pandas string dtypes)."""
    out = frame[features].copy()
    for column in categorical:
        out[column] = out[column].astype("object").where(out[column].notna(), np.nan)
        out[column] = out[column].map(lambda v: v if isinstance(v, float) and np.isnan(v) else str(v))
    return out


# ---------------------------------------------------------------- evaluation


def evaluate_predictions(
    y_true: np.ndarray, probability: np.ndarray, *, threshold: float, n_resamples: int, seed: int
) -> dict[str, MetricCI]:
    """ROC-AUC, weighted F1, accuracy and Brier with seeded percentile-bootstrap 95 % CIs."""
    truth = np.asarray(y_true).astype(int)
    prob = np.asarray(probability, dtype=float)
    pred = (prob >= threshold).astype(int)
    out: dict[str, MetricCI] = {}
    auc = roc_auc(truth, prob)
    low, high = paired_bootstrap_ci(truth, prob, roc_auc, batched=roc_auc_batched, n_resamples=n_resamples, seed=seed)
    out["roc_auc"] = MetricCI(value=auc, ci_low=low, ci_high=high)
    low, high = paired_bootstrap_ci(
        truth, pred, weighted_f1, batched=weighted_f1_batched, n_resamples=n_resamples, seed=seed + 1
    )
    out["f1_weighted"] = MetricCI(value=weighted_f1(truth, pred), ci_low=low, ci_high=high)
    correct = (pred == truth).astype(float)
    low, high = bootstrap_ci(correct, np.mean, n_resamples=n_resamples, seed=seed + 2)
    out["accuracy"] = MetricCI(value=float(correct.mean()), ci_low=low, ci_high=high)
    squared = (prob - truth) ** 2
    low, high = bootstrap_ci(squared, np.mean, n_resamples=n_resamples, seed=seed + 3)
    out["brier"] = MetricCI(value=float(squared.mean()), ci_low=low, ci_high=high)
    return out


def _figures(y_true: np.ndarray, probability: np.ndarray, out_dir: Path) -> list[Path]:
    """Reliability diagram (with a score histogram) and ROC curve of the test predictions."""
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    paths = []
    observed, predicted = calibration_curve(y_true, probability, n_bins=10, strategy="quantile")
    fig = Figure(figsize=(5, 6), dpi=100)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(predicted, observed, marker="o", label="model (test set, quantile bins)")
    top.set_ylabel("observed positive rate")
    top.set_title("Reliability diagram (held-out test set)")
    top.legend(fontsize=8)
    bottom.hist(probability, bins=20, range=(0, 1), color="#4c72b0")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("rows")
    fig.tight_layout()
    paths.append(out_dir / "reliability.png")
    fig.savefig(paths[-1])

    fpr, tpr, _ = roc_curve(y_true, probability)
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc(y_true, probability):.3f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve (held-out test set)")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "roc.png")
    fig.savefig(paths[-1])
    return paths


def _slice_frame(
    test: pd.DataFrame, dev: pd.DataFrame, sensitive: list[str], y: np.ndarray, prob: np.ndarray, pred: np.ndarray
) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Test rows with label/score/correct columns; numeric sensitive columns bucketed at dev quartiles."""
    frame = pd.DataFrame({"y_true": y, "y_score": prob, "correct": (pred == y).astype(float)}, index=test.index)
    edges_used: dict[str, list[float]] = {}
    for column in sensitive:
        values = test[column]
        if pd.api.types.is_numeric_dtype(values) and dev[column].nunique(dropna=True) > 10:
            edges = sorted({float(e) for e in np.quantile(dev[column].dropna(), [0.25, 0.5, 0.75])})
            edges_used[column] = edges
            frame[column] = bucketize(values, edges, precision=0 if np.all(np.mod(edges, 1) == 0) else 2)
        else:
            frame[column] = values
    return frame, edges_used


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _library_versions() -> dict[str, str]:
    import mlflow
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "scikit_learn": sklearn.__version__,
        "mlflow": mlflow.__version__,
    }


# ---------------------------------------------------------------- the run


@dataclass
class _Prepared:
    """The table after target checks: features, encoded labels and the stratified dev/test split."""

    frame: pd.DataFrame
    data_sha: str
    features: list[str]
    categorical: list[str]
    numeric: list[str]
    dev: pd.DataFrame
    test: pd.DataFrame
    y_dev: np.ndarray
    y_test: np.ndarray
    positive: str
    negative: str


@dataclass
class _Fitted:
    """Everything a finished search produced that ``_log`` writes to MLflow and the result."""

    started: float
    search: Any
    best: Any
    best_params: dict[str, Any]
    cv: tuple[float, float]
    metrics: dict[str, dict[str, MetricCI]]
    rows: list[SliceRow]
    flagged: list[str]
    warnings: list[str]
    analysis: DatasetAnalysis
    data_info: dict[str, Any]
    serving: ServingInfo
    schema: FeatureSchema
    x_dev: pd.DataFrame
    dev: pd.DataFrame
    test: pd.DataFrame
    y_test: np.ndarray
    test_prob: np.ndarray
    seed_report: dict[str, Any]
    features: list[str]


class TabularTrainer:
    """One training run: split -> analyse -> CV search -> test once -> slices -> log/register in MLflow."""

    def __init__(self, settings: Settings, config: TrainingConfig) -> None:
        self.settings = settings
        self.config = config

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "tracking_uri": self.settings.tracking_uri}

    def _check_columns(self, frame: pd.DataFrame) -> list[str]:
        cfg = self.config
        wanted = {"target": [cfg.target], "sensitive": cfg.sensitive or [], "drop": cfg.drop}
        for role, columns in wanted.items():
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise InvalidInputError(
                    f"{role} column(s) {missing} are not in {cfg.data}", hint=f"columns are {list(frame.columns)}"
                )
        features = [c for c in frame.columns if c != cfg.target and c not in set(cfg.drop)]
        if not features:
            raise InvalidInputError("no feature columns remain after --drop")
        return features

    def run(self) -> TrainingResult:
        started = time.perf_counter()
        seed_report = set_seed(self.config.seed)
        warnings: list[str] = []
        data = self._prepare(warnings)
        cfg = self.config

        # 2. analysis on train+validation only (plus the leakage count)
        analysis = analyze_dataset(data.dev, cfg.target)
        warnings += analysis.warnings
        shared = overlap_rows(data.dev[data.features], data.test[data.features])
        if shared:
            warnings.append(f"{shared} test rows are feature-identical to train+validation rows (possible leakage)")
        x_dev = _to_feature_frame(data.dev, data.features, data.categorical)
        x_test = _to_feature_frame(data.test, data.features, data.categorical)

        search, oof, test_prob = self._search(data, x_dev, x_test)
        best_index = int(search.best_index_)
        metrics = {
            "validation": evaluate_predictions(
                data.y_dev, oof, threshold=cfg.threshold, n_resamples=cfg.n_resamples, seed=cfg.seed
            ),
            "test": evaluate_predictions(
                data.y_test, test_prob, threshold=cfg.threshold, n_resamples=cfg.n_resamples, seed=cfg.seed
            ),
        }
        rows, flagged, bucket_edges = self._slices(data, test_prob, warnings)
        serving = ServingInfo(
            schema_=infer_feature_schema(data.dev, cfg.target, drop=cfg.drop),
            positive_label=data.positive,
            negative_label=data.negative,
            threshold=cfg.threshold,
            calibration=calibration_bins(data.y_test, test_prob),
        )
        fitted = _Fitted(
            started=started,
            search=search,
            best=search.best_estimator_,
            best_params={k.removeprefix("model__"): v for k, v in search.best_params_.items()},
            cv=(
                float(search.cv_results_["mean_test_score"][best_index]),
                float(search.cv_results_["std_test_score"][best_index]),
            ),
            metrics=metrics,
            rows=rows,
            flagged=flagged,
            warnings=warnings,
            analysis=analysis,
            data_info=self._data_info(data, analysis, bucket_edges),
            serving=serving,
            schema=serving.schema_,
            x_dev=x_dev,
            dev=data.dev,
            test=data.test,
            y_test=data.y_test,
            test_prob=test_prob,
            seed_report=seed_report,
            features=data.features,
        )
        return self._log(fitted)

    def _prepare(self, warnings: list[str]) -> _Prepared:
        """Load, hash and check the table, then 1. split first (stratified), before looking at anything."""
        from sklearn.model_selection import train_test_split

        frame = load_table(self.config.data)
        data_sha = file_sha256(self.config.data)
        if self.config.sensitive is None:
            detected = detect_sensitive([str(c) for c in frame.columns], self.config.target)
            self.config = self.config.model_copy(update={"sensitive": detected})
            if detected:
                warnings.append(f"slicing by the columns named like protected attributes: {detected}")
        cfg = self.config
        features = self._check_columns(frame)
        n_missing_target = int(frame[cfg.target].isna().sum())
        if n_missing_target:
            warnings.append(f"{n_missing_target} rows without a target were dropped")
            frame = frame.loc[frame[cfg.target].notna()]
        frame = frame.reset_index(drop=True)
        y, positive, negative = encode_target(frame[cfg.target], cfg.positive_label)
        dev_idx, test_idx = train_test_split(
            np.arange(len(frame)), test_size=cfg.test_size, stratify=y, random_state=cfg.seed, shuffle=True
        )
        y_dev = y[dev_idx]
        if min(np.bincount(y_dev, minlength=2)) < cfg.cv_folds:
            raise InvalidInputError(f"too few rows of the minority class for {cfg.cv_folds}-fold CV")
        categorical = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
        return _Prepared(
            frame=frame,
            data_sha=data_sha,
            features=features,
            categorical=categorical,
            numeric=[c for c in features if c not in set(categorical)],
            dev=frame.iloc[dev_idx],
            test=frame.iloc[test_idx],
            y_dev=y_dev,
            y_test=y[test_idx],
            positive=positive,
            negative=negative,
        )

    def _search(self, data: _Prepared, x_dev: pd.DataFrame, x_test: pd.DataFrame) -> tuple[Any, np.ndarray, np.ndarray]:
        """3. CV search on train+validation, out-of-fold predictions, then 4. the test set, once."""
        from sklearn.base import clone
        from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
        from threadpoolctl import threadpool_limits

        cfg = self.config
        splitter = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        search = GridSearchCV(
            build_pipeline(cfg.model, data.numeric, data.categorical, cfg.seed),
            PARAM_GRIDS[cfg.model],
            scoring="roc_auc",
            cv=splitter,
            refit=True,
            n_jobs=1,
            error_score="raise",
        )
        # One BLAS/OpenMP thread: identical float summation order on every run (bit-for-bit metrics), and
        # far faster on small tables (HistGradientBoosting's thread start-up dominates 800-row fits).
        with threadpool_limits(limits=1):
            search.fit(x_dev, data.y_dev)
            best = search.best_estimator_
            oof = cross_val_predict(clone(best), x_dev, data.y_dev, cv=splitter, method="predict_proba")[:, 1]
            test_prob = best.predict_proba(x_test)[:, 1]
        return search, oof, test_prob

    def _slices(
        self, data: _Prepared, test_prob: np.ndarray, warnings: list[str]
    ) -> tuple[list[SliceRow], list[str], dict[str, list[float]]]:
        """The slice table on the test rows; appends a warning per unclear gap and per flagged slice."""
        cfg = self.config
        test_pred = (test_prob >= cfg.threshold).astype(int)
        sensitive = list(cfg.sensitive or [])
        slice_input, bucket_edges = _slice_frame(data.test, data.dev, sensitive, data.y_test, test_prob, test_pred)
        rows = slice_rows(
            slice_input,
            metric_columns=["correct"],
            slice_columns=sensitive,
            min_size=cfg.min_slice_size,
            metrics=[roc_auc_metric("y_true", "y_score")],
            max_gap=cfg.max_slice_gap,
            n_resamples=cfg.n_resamples,
            seed=cfg.seed,
        )
        rows = [r.model_copy(update={"metric": "accuracy"}) if r.metric == "correct" else r for r in rows]
        flagged = [f"{r.metric}: {r.slice_column}={r.slice_value}" for r in rows if r.flagged]
        for r in rows:
            if r.status == "gap_not_significant":
                warnings.append(
                    f"slice {r.slice_column}={r.slice_value}: {r.metric} {r.gap:.3f} below overall, CI "
                    "includes overall (too few rows to tell)"
                )
        for item in flagged:
            warnings.append(f"possible disparate impact: {item} is more than {cfg.max_slice_gap} below overall")
        return rows, flagged, bucket_edges

    def _data_info(
        self, data: _Prepared, analysis: DatasetAnalysis, bucket_edges: dict[str, list[float]]
    ) -> dict[str, Any]:
        cfg = self.config
        return {
            "path": str(cfg.data),
            "sha256": data.data_sha,
            "rows": len(data.frame),
            "train_validation_rows": len(data.dev),
            "test_rows": len(data.test),
            "positive_label": data.positive,
            "class_balance": analysis.target.counts if analysis.target else {},
            "split": f"stratified {1 - cfg.test_size:.0%}/{cfg.test_size:.0%} train+validation/test, seed {cfg.seed}; "
            f"validation = {cfg.cv_folds}-fold stratified out-of-fold predictions",
            "bucket_edges": bucket_edges,
        }

    def _log(self, fitted: _Fitted) -> TrainingResult:
        """Write artifacts, log everything to MLflow, register the model as ``staging``."""
        from rag.ml.model_card import render_model_card
        from rag.ml.registry import client_for, ensure_experiment

        cfg = self.config
        client = client_for(self.settings)
        experiment_id = ensure_experiment(client, self.settings, cfg.experiment_name)
        versions = _library_versions()
        commit = _git_commit()
        run = client.create_run(
            experiment_id,
            run_name=f"{cfg.model}-seed{cfg.seed}-{fitted.data_info['sha256'][:8]}",
            tags={"mlflow.source.name": "rag train", "data_sha256": fitted.data_info["sha256"], "task": "tabular"},
        )
        run_id = run.info.run_id
        try:
            self._log_params_and_metrics(client, run_id, fitted, versions, commit)
            with tempfile.TemporaryDirectory(prefix="rag-train-") as tmp:
                out = Path(tmp)
                table = self._log_artifacts(client, run_id, fitted, out)
                model_sha, content_sha = self._log_model(client, run_id, fitted, out / "model", versions)
                version = self._register(client, run, fitted, model_sha)
                result = self._result(fitted, run_id, experiment_id, str(version), model_sha, content_sha)
                card = render_model_card(
                    result, cfg, fitted.analysis, fitted.schema, fitted.serving, table, versions, commit
                )
                (out / "model_card.md").write_text(card)
                client.log_artifact(run_id, str(out / "model_card.md"))
            elapsed = round(time.perf_counter() - fitted.started, 2)
            client.log_metric(run_id, "train_runtime_s", elapsed)
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        return result.model_copy(update={"elapsed_s": elapsed})

    def _log_params_and_metrics(
        self, client: Any, run_id: str, fitted: _Fitted, versions: dict[str, str], commit: str | None
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        cfg = self.config
        params = {
            "model_type": cfg.model,
            "seed": cfg.seed,
            "data_path": str(cfg.data),
            "data_sha256": fitted.data_info["sha256"],
            "data_rows": fitted.data_info["rows"],
            "target": cfg.target,
            "positive_label": fitted.serving.positive_label,
            "features": json.dumps(fitted.features),
            "drop": json.dumps(cfg.drop),
            "sensitive": json.dumps(cfg.sensitive),
            "test_size": cfg.test_size,
            "split": "stratified train+validation/test, then stratified k-fold CV",
            "cv_folds": cfg.cv_folds,
            "cv_scoring": "roc_auc",
            "param_grid": json.dumps(PARAM_GRIDS[cfg.model]),
            "threshold": cfg.threshold,
            "n_resamples": cfg.n_resamples,
            "min_slice_size": cfg.min_slice_size,
            **{f"best_{name}": value for name, value in fitted.best_params.items()},
            **{f"version_{name}": value for name, value in versions.items()},
        }
        metrics: dict[str, float] = {"cv_roc_auc_mean": fitted.cv[0], "cv_roc_auc_std": fitted.cv[1]}
        for split_name, values in fitted.metrics.items():
            prefix = "val" if split_name == "validation" else split_name
            for name, metric in values.items():
                for suffix, value in (("", metric.value), ("_ci_low", metric.ci_low), ("_ci_high", metric.ci_high)):
                    if value is not None:
                        metrics[f"{prefix}_{name}{suffix}"] = float(value)
        now = int(time.time() * 1000)
        tags = {"git_commit": commit or "unknown", "seed_report": json.dumps(fitted.seed_report)}
        client.log_batch(
            run_id,
            metrics=[Metric(name, value, now, 0) for name, value in sorted(metrics.items())],
            params=[Param(name, str(value)) for name, value in sorted(params.items())],
            tags=[RunTag(name, value) for name, value in tags.items()],
        )

    def _log_artifacts(self, client: Any, run_id: str, fitted: _Fitted, out: Path) -> pd.DataFrame:
        """Config, analysis, metrics, CV results, slices, serving schema, held-out rows, plots; returns the slices."""
        from rag.ml.slices import format_slice_table

        (out / "config.json").write_text(json.dumps(self.to_dict(), indent=2))
        (out / "analysis.json").write_text(json.dumps(fitted.analysis.to_dict(), indent=2))
        (out / "metrics.json").write_text(
            json.dumps({s: {n: m.model_dump() for n, m in v.items()} for s, v in fitted.metrics.items()}, indent=2)
        )
        pd.DataFrame(fitted.search.cv_results_).drop(columns=["params"]).to_csv(out / "cv_results.csv", index=False)
        table = pd.DataFrame([r.model_dump() for r in fitted.rows], columns=list(SliceRow.model_fields))
        table.to_csv(out / "slices.csv", index=False)
        (out / "slices.md").write_text(format_slice_table(table))
        (out / "serving.json").write_text(fitted.serving.model_dump_json(by_alias=True, indent=2))
        heldout = fitted.test.copy()
        heldout.insert(0, ROW_ID, heldout.index.to_numpy())
        (out / "heldout").mkdir()
        heldout.to_csv(out / HELDOUT_ARTIFACT, index=False)
        fitted.dev.to_csv(out / "drift_reference.csv", index=False)
        plots = _figures(fitted.y_test, fitted.test_prob, out)
        for name in [
            "config.json",
            "analysis.json",
            "metrics.json",
            "cv_results.csv",
            "slices.csv",
            "slices.md",
            "serving.json",
            "drift_reference.csv",
            *[p.name for p in plots],
        ]:
            client.log_artifact(run_id, str(out / name))
        client.log_artifact(run_id, str(out / HELDOUT_ARTIFACT), "heldout")
        return table

    def _log_model(
        self, client: Any, run_id: str, fitted: _Fitted, model_dir: Path, versions: dict[str, str]
    ) -> tuple[str, str]:
        """Save the estimator with signature and input example; returns (file sha256, content sha256)."""
        import mlflow.sklearn
        from mlflow.models import infer_signature

        example = fitted.x_dev.head(5)
        with warnings_module.catch_warnings():
            # integer columns are intended: the request schema rejects missing values for them
            warnings_module.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            signature = infer_signature(example, fitted.best.predict_proba(example))
        mlflow.sklearn.save_model(
            fitted.best,
            str(model_dir),
            signature=signature,
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=SKOPS_TRUSTED_TYPES[self.config.model],
            pip_requirements=[
                f"scikit-learn=={versions['scikit_learn']}",
                f"numpy=={versions['numpy']}",
                f"pandas=={versions['pandas']}",
                f"scipy=={versions['scipy']}",
            ],
        )
        model_sha = file_sha256(next(p for p in sorted(model_dir.glob("model.*")) if p.is_file()))
        client.log_artifacts(run_id, str(model_dir), "model")
        content_sha = model_content_sha256(fitted.best)
        client.set_tag(run_id, "model_sha256", model_sha)
        client.set_tag(run_id, "model_content_sha256", content_sha)
        return model_sha, content_sha

    def _register(self, client: Any, run: Any, fitted: _Fitted, model_sha: str) -> Any:
        """Register a new model version and point the ``staging`` alias at it; returns the version."""
        from rag.ml.registry import STAGING

        cfg = self.config
        name = cfg.model_name
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(
                name, description=f"Binary classifier for {cfg.target!r} trained by `rag train`."
            )
        version = client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"model_sha256": model_sha, "data_sha256": fitted.data_info["sha256"], "seed": str(cfg.seed)},
            description=f"{cfg.model} test ROC-AUC {fitted.metrics['test']['roc_auc'].value:.4f}",
        )
        client.set_registered_model_alias(name, STAGING, version.version)
        return version.version

    def _result(
        self, fitted: _Fitted, run_id: str, experiment_id: str, version: str, model_sha: str, content_sha: str
    ) -> TrainingResult:
        from rag.ml.registry import STAGING

        cfg = self.config
        return TrainingResult(
            run_id=run_id,
            experiment=cfg.experiment_name,
            experiment_id=experiment_id,
            tracking_uri=self.settings.tracking_uri,
            model_name=cfg.model_name,
            model_version=version,
            alias=STAGING,
            model_type=cfg.model,
            best_params=fitted.best_params,
            cv_roc_auc_mean=fitted.cv[0],
            cv_roc_auc_std=fitted.cv[1],
            data=fitted.data_info,
            metrics=fitted.metrics,
            slices=fitted.rows,
            flagged_slices=fitted.flagged,
            warnings=fitted.warnings,
            model_sha256=model_sha,
            model_content_sha256=content_sha,
            model_card="model_card.md",
            elapsed_s=0.0,
        )


def train_tabular(settings: Settings, config: TrainingConfig) -> TrainingResult:
    """Run ``TabularTrainer`` (the entry point for the CLI and for tests)."""
    return TabularTrainer(settings, config).run()

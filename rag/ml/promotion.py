"""The promotion gate: ``staging`` becomes ``production`` only if it is not worse on the same held-out rows.

Both versions are scored on ONE set of rows: by default the held-out test rows logged with the staging
run (``heldout/test.csv``), restricted to the rows that were also held out from the production run when
both runs used the same data file (sha256), so that neither model has seen any of them. With different
data files the overlap cannot be known and the report warns; ``holdout`` lets the caller supply an
explicit held-out CSV instead. The gate compares ROC-AUC: promote when
``auc(staging) >= auc(production) - tolerance``; the paired bootstrap CI of the difference (same
resampled rows for both models) is reported so a reviewer can see whether a difference is noise.
On promotion the old production version keeps the alias ``previous-production`` for a one-command
rollback, and the decision is stored in the staging run (``promotion/decision-*.json``).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from rag.errors import InvalidInputError
from rag.ml.registry import (
    PREVIOUS_PRODUCTION,
    PRODUCTION,
    STAGING,
    client_for,
    download_run_artifact,
    load_sklearn_version,
    model_version_by_alias,
    require_version,
)
from rag.ml.serving import ServingInfo
from rag.ml.slices import (
    paired_bootstrap_ci,
    roc_auc,
    roc_auc_batched,
    weighted_f1,
)
from rag.ml.training import HELDOUT_ARTIFACT, ROW_ID, SERVING_ARTIFACT, _to_feature_frame
from rag.settings import Settings


class VersionScore(BaseModel):
    version: str
    run_id: str
    roc_auc: float
    roc_auc_ci: tuple[float | None, float | None]
    f1_weighted: float
    brier: float


class PromotionDecision(BaseModel):
    """The gate's verdict and the evidence behind it (``rag promote-model --json``)."""

    model_name: str
    promoted: bool
    outcome: Literal["promoted", "refused", "already_production"]
    reason: str
    metric: str = "roc_auc"
    tolerance: float
    heldout_source: str
    heldout_rows: int
    staging: VersionScore
    production: VersionScore | None
    difference: float | None = None
    difference_ci: tuple[float | None, float | None] | None = None
    warnings: list[str]
    decided_at: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _serving_info(settings: Settings, run_id: str) -> ServingInfo:
    path = download_run_artifact(settings, run_id, SERVING_ARTIFACT)
    return ServingInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _heldout(settings: Settings, run_id: str) -> pd.DataFrame:
    return pd.read_csv(download_run_artifact(settings, run_id, HELDOUT_ARTIFACT))


def _probabilities(model: Any, info: ServingInfo, frame: pd.DataFrame) -> np.ndarray:
    features = [str(c) for c in getattr(model, "feature_names_in_", info.schema_.names)]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"the held-out data lack the model's feature columns {missing}")
    categorical = [f.name for f in info.schema_.features if f.kind == "categorical" and f.name in features]
    return model.predict_proba(_to_feature_frame(frame, features, categorical))[:, 1]


def _score(version: Any, y: np.ndarray, prob: np.ndarray, threshold: float, seed: int) -> VersionScore:
    ci = paired_bootstrap_ci(y, prob, roc_auc, batched=roc_auc_batched, seed=seed)
    brier = float(np.mean((prob - y) ** 2))
    return VersionScore(
        version=str(version.version),
        run_id=version.run_id,
        roc_auc=roc_auc(y, prob),
        roc_auc_ci=(None if math.isnan(ci[0]) else ci[0], None if math.isnan(ci[1]) else ci[1]),
        f1_weighted=weighted_f1(y, (prob >= threshold).astype(int)),
        brier=brier,
    )


def _difference_ci(y: np.ndarray, new: np.ndarray, old: np.ndarray, seed: int, n: int = 1000) -> tuple[float, float]:
    """Percentile CI of auc(new) - auc(old) over the same bootstrap rows (paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n, len(y)))
    diffs = roc_auc_batched(y[idx], new[idx]) - roc_auc_batched(y[idx], old[idx])
    return (float(np.nanpercentile(diffs, 2.5)), float(np.nanpercentile(diffs, 97.5)))


def promote_model(
    settings: Settings,
    name: str,
    *,
    tolerance: float = 0.0,
    holdout: Path | None = None,
    seed: int = 0,
    dry_run: bool = False,
) -> PromotionDecision:
    """Move the ``staging`` alias's version to ``production`` if it is not worse (see module docstring)."""
    if tolerance < 0:
        raise InvalidInputError(f"tolerance must be >= 0, got {tolerance}")
    client = client_for(settings)
    staging = require_version(client, name, STAGING)
    production = model_version_by_alias(client, name, PRODUCTION)
    warnings: list[str] = []
    staging_info = _serving_info(settings, staging.run_id)
    frame, source = _comparison_rows(settings, client, staging, production, holdout, warnings)
    frame, y = _labelled(frame, staging_info)
    staging_prob = _probabilities(load_sklearn_version(settings, client, staging), staging_info, frame)
    staging_score = _score(staging, y, staging_prob, staging_info.threshold, seed)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    common: dict[str, Any] = {
        "model_name": name,
        "tolerance": tolerance,
        "heldout_source": source,
        "heldout_rows": len(frame),
        "staging": staging_score,
        "warnings": warnings,
        "decided_at": now,
    }
    if production is None:
        decision = PromotionDecision(
            promoted=True,
            outcome="promoted",
            reason="no production version yet: staging becomes the baseline",
            production=None,
            **common,
        )
    elif str(production.version) == str(staging.version):
        decision = PromotionDecision(
            promoted=False,
            outcome="already_production",
            reason=f"version {staging.version} is already in production",
            production=staging_score,
            difference=0.0,
            **common,
        )
    else:
        decision = _compare_with_production(
            settings, client, staging, production, staging_info, frame, y, staging_prob, seed, common
        )
    if decision.promoted and not dry_run:
        if production is not None:
            client.set_registered_model_alias(name, PREVIOUS_PRODUCTION, production.version)
        client.set_registered_model_alias(name, PRODUCTION, staging.version)
        client.set_model_version_tag(name, staging.version, "promoted_at", now)
    if not dry_run:
        client.log_dict(staging.run_id, decision.to_dict(), f"promotion/decision-{now.replace(':', '')}.json")
    return decision


def _comparison_rows(
    settings: Settings, client: Any, staging: Any, production: Any, holdout: Path | None, warnings: list[str]
) -> tuple[pd.DataFrame, str]:
    """The held-out rows both models are compared on, and where they come from (appends warnings)."""
    if holdout is not None:
        if not holdout.is_file():
            raise InvalidInputError(f"held-out file {holdout} does not exist")
        return pd.read_csv(holdout), str(holdout)
    frame = _heldout(settings, staging.run_id)
    source = f"runs:/{staging.run_id}/{HELDOUT_ARTIFACT}"
    if production is None or production.run_id == staging.run_id:
        return frame, source
    s_run, p_run = client.get_run(staging.run_id), client.get_run(production.run_id)
    if s_run.data.params.get("data_sha256") == p_run.data.params.get("data_sha256"):
        prod_rows = set(_heldout(settings, production.run_id)[ROW_ID].tolist())
        before = len(frame)
        frame = frame.loc[frame[ROW_ID].isin(prod_rows)]
        if len(frame) < before:
            warnings.append(
                f"the two runs held out different rows; compared on the {len(frame)} of {before} rows "
                "held out from both"
            )
    else:
        warnings.append(
            "production was trained on a different data file: some of these rows may have been in its "
            "training data (favours production); pass --holdout with rows neither model has seen"
        )
    return frame, source


def _labelled(frame: pd.DataFrame, info: ServingInfo) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with a target, and the 0/1 labels; at least 30 rows of both classes or an error."""
    target = info.schema_.target
    if target not in frame.columns:
        raise InvalidInputError(f"the held-out data have no target column {target!r}")
    frame = frame.loc[frame[target].notna()]
    y = (frame[target].astype(str) == info.positive_label).to_numpy(dtype=int)
    if len(frame) < 30 or y.min() == y.max():
        raise InvalidInputError(
            f"the held-out data have {len(frame)} usable rows and {len(set(y.tolist()))} classes: "
            "need at least 30 rows of both classes to compare models"
        )
    return frame, y


def _compare_with_production(
    settings: Settings,
    client: Any,
    staging: Any,
    production: Any,
    staging_info: ServingInfo,
    frame: pd.DataFrame,
    y: np.ndarray,
    staging_prob: np.ndarray,
    seed: int,
    common: dict[str, Any],
) -> PromotionDecision:
    """Staging versus production on the same rows: promoted unless ROC-AUC drops by more than the tolerance."""
    production_info = _serving_info(settings, production.run_id)
    if production_info.positive_label != staging_info.positive_label:
        raise InvalidInputError(
            f"staging predicts {staging_info.positive_label!r} but production predicts "
            f"{production_info.positive_label!r}: the models are not comparable"
        )
    production_prob = _probabilities(load_sklearn_version(settings, client, production), production_info, frame)
    production_score = _score(production, y, production_prob, production_info.threshold, seed)
    staging_score = common["staging"]
    tolerance = common["tolerance"]
    difference = staging_score.roc_auc - production_score.roc_auc
    low, high = _difference_ci(y, staging_prob, production_prob, seed)
    promoted = difference >= -tolerance
    verdict = "not worse than" if promoted else "worse than"
    return PromotionDecision(
        promoted=promoted,
        outcome="promoted" if promoted else "refused",
        reason=(
            f"staging v{staging.version} ROC-AUC {staging_score.roc_auc:.4f} is {verdict} production "
            f"v{production.version} {production_score.roc_auc:.4f} (difference {difference:+.4f}, paired 95% "
            f"CI [{low:+.4f}, {high:+.4f}], tolerance {tolerance:g})"
        ),
        production=production_score,
        difference=difference,
        difference_ci=(low, high),
        **common,
    )

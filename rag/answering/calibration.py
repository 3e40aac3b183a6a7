"""The calibrated answer confidence: P(the answer is correct) from retrieval, generation and verification signals.

Fitted offline by ``rag calibrate`` (eval/calibrate.py) on labelled questions and stored as a small JSON artifact:
feature names with their defaults and standardisation, logistic-regression coefficients, optional isotonic
breakpoints over the logistic output, the abstention threshold for a grid of target error rates (chosen on a
calibration split with a Learn-then-Test / Clopper-Pearson bound) and the test split's reliability table, which
gives every confidence its plain meaning ("answers at this confidence were right 9 times in 10 on the test set").
Serving is pure numpy: nothing here imports scikit-learn. ``version`` is the hash of the artifact's content and goes
into every response's ``versions.calibration``.

Without an artifact the model is explicitly ``uncalibrated``: the old hand-set sigmoid of the top cosine, threshold
0 (it never abstains), version ``uncalibrated``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rag.answering.decisions import opening_decision
from rag.errors import ConfigError
from rag.hashing import sha256_json
from rag.settings import Settings

ARTIFACT_FORMAT = 1
DEFAULT_ARTIFACT = "calibration_default.json"
UNCALIBRATED = "uncalibrated"
log = logging.getLogger("rag")
NEVER_ANSWER = 1.01  # a threshold above any probability: no feasible threshold for that target error rate
TARGET_GRID = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 1.0)
MISSING_PREFIX = "missing:"  # a derived 0/1 feature: the named feature was absent (e.g. no token log-probs)

# The retrieval and generation signals every pipeline result has (verification features come from
# rag/answering/verify.py under their own names). Missing value -> the default here; the reranker also gets a
# missing-indicator, because "not scored" is not "scored low".
SIGNAL_DEFAULTS: dict[str, float] = {
    "retrieval.top_dense": 0.0,  # best cosine similarity of a returned chunk to the question
    "retrieval.top_bm25": 0.0,  # log1p of the best BM25 score (0 when BM25 did not find the chunk)
    "retrieval.top_fused": 0.0,  # best fused (hybrid) score
    "retrieval.top_rerank": 0.0,  # best cross-encoder logit (0 with rerank_missing = 1 when not scored)
    "retrieval.rerank_margin": 0.0,  # best minus second-best cross-encoder logit
    "retrieval.rerank_missing": 1.0,
    "generation.said_unknown": 0.0,  # the model said the sources do not contain the answer
    "generation.cited": 0.0,  # the answer carries at least one valid [n]
    "generation.invalid_citations": 0.0,  # [n] that point at no shown source
    "generation.answer_words": 0.0,  # log1p of the answer's word count
    "generation.decision": 0.0,  # the answer opens with yes, no or maybe: a decision, which no verifier checks
    "question.yes_no": 0.0,  # a yes/no question ("Does X cause Y?"): the answer is a decision no verifier reads
    "question.statement": 0.0,  # not a question at all (a claim, a keyword list)
}

# Openers of a question that is answered by yes or no; with " or " it offers options instead ("Is it A or B?").
YES_NO_OPENERS = frozenset({
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "should", "would", "will", "shall",
    "may", "might", "must", "has", "have", "had",
})
WH_OPENERS = frozenset({
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "name", "list", "describe", "explain",
})


@functools.cache
def _warn_uncertified(version: str, target: float, certified: tuple[float, ...], fallback: float) -> None:
    """Once per process and setting: the configured error rate has no certified threshold."""
    log.warning(
        "confidence model %s certifies no threshold for RAG_TARGET_ERROR_RATE=%s (certified targets: %s); "
        "answers below RAG_UNCERTIFIED_MIN_CONFIDENCE=%s abstain instead",
        version, target, list(certified), fallback,
    )


def question_form(question: str) -> dict[str, float]:
    """Whether the question asks for a decision (yes/no) or is no question at all: both kinds of answer were wrong
    far more often than a fact with a citation (docs/EVALUATION.md), and neither shows in the other signals."""
    words = re.findall(r"[a-z]+", question.lower())
    first = words[0] if words else ""
    yes_no = first in YES_NO_OPENERS and " or " not in f" {question.lower()} "
    asks = question.rstrip().endswith("?") or first in YES_NO_OPENERS or first in WH_OPENERS
    return {"question.yes_no": float(yes_no), "question.statement": float(not asks)}


def signal_features(question: str, retrieval: Any, generated: Any) -> dict[str, float]:
    """The question-form, retrieval and generation features of one result (``RetrievalResult``,
    ``GeneratedAnswer | None``)."""
    chunks = list(getattr(retrieval, "chunks", []) or [])
    features = dict(SIGNAL_DEFAULTS)
    features.update(question_form(question))
    if chunks:
        features["retrieval.top_dense"] = float(max(c.dense_score for c in chunks))
        bm25 = [c.bm25_score for c in chunks if c.bm25_score is not None]
        features["retrieval.top_bm25"] = math.log1p(max(0.0, float(max(bm25)))) if bm25 else 0.0
        features["retrieval.top_fused"] = float(max(c.score for c in chunks))
        rerank = sorted((float(c.rerank_score) for c in chunks if c.rerank_score is not None), reverse=True)
        if rerank:
            features["retrieval.top_rerank"] = rerank[0]
            features["retrieval.rerank_margin"] = rerank[0] - rerank[1] if len(rerank) > 1 else 0.0
            features["retrieval.rerank_missing"] = 0.0
    if generated is not None:
        features["generation.said_unknown"] = float(bool(generated.model_said_unknown))
        features["generation.cited"] = float(bool(generated.cited))
        features["generation.invalid_citations"] = float(len(generated.invalid_citations))
        features["generation.answer_words"] = math.log1p(len(str(generated.text).split()))
        features["generation.decision"] = float(opening_decision(str(generated.text)) is not None)
    return features


def heuristic_confidence(features: Mapping[str, float], settings: Settings) -> float:
    """The pre-calibration confidence: sigmoid(slope * (top cosine - center)) x the uncited factor."""
    top = float(features.get("retrieval.top_dense", 0.0))
    value = 1.0 / (1.0 + math.exp(-settings.confidence_slope * (top - settings.confidence_center)))
    cited = features.get("generation.cited", 1.0) >= 0.5
    return round(value * (1.0 if cited else settings.uncited_factor), 4)


@dataclass(frozen=True)
class ConfidenceModel:
    """A fitted (or explicitly uncalibrated) confidence model; ``artifact`` is the JSON it was loaded from."""

    artifact: dict[str, Any]
    target_error_rate: float
    settings: Settings | None = field(default=None, repr=False, compare=False)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfidenceModel:
        """``RAG_CALIBRATION_PATH``, else the packaged default, else the explicit uncalibrated model."""
        if settings.calibration_path is not None:
            model = cls.load(settings.calibration_path, settings.target_error_rate, settings)
        else:
            packaged = resources.files("rag.answering").joinpath(DEFAULT_ARTIFACT)
            if not packaged.is_file():
                return cls.uncalibrated(settings)
            model = cls.from_artifact(json.loads(packaged.read_text(encoding="utf-8")), settings.target_error_rate,
                                      settings, source=f"package:{DEFAULT_ARTIFACT}")
        if not model.certified:
            certified = [t["target_error_rate"] for t in model.artifact["thresholds"] if t["threshold"] < NEVER_ANSWER]
            _warn_uncertified(model.version, settings.target_error_rate, tuple(certified),
                              settings.uncertified_min_confidence)  # fmt: skip
        return model

    @classmethod
    def load(cls, path: Path, target_error_rate: float = 0.05, settings: Settings | None = None) -> ConfidenceModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"calibration artifact {path} does not exist",
                              hint="run `rag calibrate` or unset RAG_CALIBRATION_PATH") from exc
        except ValueError as exc:
            raise ConfigError(f"calibration artifact {path} is not valid JSON: {exc}",
                              hint="point RAG_CALIBRATION_PATH at a file written by `rag calibrate`") from exc
        return cls.from_artifact(data, target_error_rate, settings, source=str(path))

    @classmethod
    def from_artifact(
        cls,
        data: dict[str, Any],
        target_error_rate: float = 0.05,
        settings: Settings | None = None,
        *,
        source: str = "",
    ) -> ConfidenceModel:
        problems = validate_artifact(data)
        if problems:
            raise ConfigError(f"calibration artifact {source or '(in memory)'} is invalid: {'; '.join(problems)}",
                              hint="refit it with `rag calibrate`")
        return cls(data, target_error_rate, settings)

    @classmethod
    def uncalibrated(cls, settings: Settings) -> ConfidenceModel:
        return cls({"format": ARTIFACT_FORMAT, "kind": UNCALIBRATED}, settings.target_error_rate, settings)

    # ---------------------------------------------------------------- serving

    @property
    def kind(self) -> str:
        return str(self.artifact["kind"])

    @property
    def calibrated(self) -> bool:
        return self.kind != UNCALIBRATED

    @property
    def version(self) -> str:
        return artifact_version(self.artifact) if self.calibrated else UNCALIBRATED

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.artifact.get("features", [])]

    @property
    def certified(self) -> bool:
        """Whether the artifact holds a Learn-then-Test threshold for the target (always true for target 1)."""
        if not self.calibrated or self.target_error_rate >= 1.0:
            return True
        entry = self._grid_entry()
        return entry is not None and float(entry["threshold"]) < NEVER_ANSWER

    def _grid_entry(self) -> dict[str, Any] | None:
        eligible = [t for t in self.artifact["thresholds"] if t["target_error_rate"] <= self.target_error_rate + 1e-12]
        return max(eligible, key=lambda t: t["target_error_rate"]) if eligible else None

    @property
    def threshold(self) -> float:
        """Abstain below this confidence: the grid's threshold for the largest target <= ``target_error_rate``
        (conservative); 0 when uncalibrated or target 1. Where no threshold is certified, the settings'
        ``uncertified_min_confidence`` (without settings: above every probability, never answer)."""
        if not self.calibrated or self.target_error_rate >= 1.0:
            return 0.0
        if not self.certified:
            return self.settings.uncertified_min_confidence if self.settings is not None else NEVER_ANSWER
        entry = self._grid_entry()
        assert entry is not None
        return float(entry["threshold"])

    def predict(self, features: Mapping[str, float]) -> float:
        """Calibrated probability that the answer is correct (rounded to 4 places, like every response field)."""
        if not self.calibrated:
            if self.settings is None:
                raise ConfigError("the uncalibrated confidence needs the settings (slope, center)")
            return heuristic_confidence(features, self.settings)
        return round(float(self.predict_many([features])[0]), 4)

    def predict_many(self, rows: list[Mapping[str, float]]) -> np.ndarray:
        """Unrounded probabilities for many feature dicts (the fit and the evaluation use this)."""
        specs = self.artifact["features"]
        values = [[feature_value(row, f) for f in specs] for row in rows]
        x = np.array(values, dtype=float).reshape(len(rows), len(specs))
        mean = np.array([f["mean"] for f in specs], dtype=float)
        scale = np.array([f["scale"] for f in specs], dtype=float)
        coef = np.array([f["coef"] for f in specs], dtype=float)
        z = ((x - mean) / scale) @ coef + float(self.artifact["intercept"])
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        iso = self.artifact.get("isotonic")
        if iso:
            p = np.interp(p, np.array(iso["x"], dtype=float), np.array(iso["y"], dtype=float))
        return np.clip(p, 0.0, 1.0)

    def meaning(self, confidence: float) -> str:
        """What a confidence meant on the held-out test set, in words, from the artifact's reliability table."""
        if not self.calibrated:
            return "uncalibrated: a heuristic score of retrieval similarity, not a measured probability"
        for row in self.artifact.get("reliability", []):
            last = row is self.artifact["reliability"][-1]
            if row["low"] <= confidence < row["high"] or (last and confidence <= row["high"]):
                n, right = int(row["n"]), int(row["correct"])
                span = f"{row['low']:.1f}-{row['high']:.1f}"
                if n < 5:
                    return f"too few test answers had a confidence of {span} to say (n={n})"
                return (f"answers at this confidence ({span}) were right {round(10 * right / n)} times in 10 "
                        f"on the test set ({right} of {n})")
        return "no test answers at this confidence"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "features": self.feature_names,
            "target_error_rate": self.target_error_rate,
            "threshold": self.threshold,
            "threshold_rule": "learn-then-test" if self.certified else "uncertified_min_confidence",
            "data_hash": self.artifact.get("data", {}).get("hash"),
        }


def feature_value(row: Mapping[str, float], spec: Mapping[str, Any]) -> float:
    """The feature's value; ``missing:<name>`` is 1 when ``<name>`` is absent (or not finite), else 0."""
    name = str(spec["name"])
    if name.startswith(MISSING_PREFIX):
        base = row.get(name.removeprefix(MISSING_PREFIX))
        return float(base is None or not math.isfinite(float(base)))
    value = row.get(name)
    if value is None or not math.isfinite(float(value)):
        return float(spec["default"])
    return float(value)


def artifact_version(data: Mapping[str, Any]) -> str:
    """12 hex digits of the canonical JSON of the artifact (its ``version`` key, if any, left out)."""
    return sha256_json({k: v for k, v in data.items() if k != "version"})[:12]


def validate_artifact(data: Any) -> list[str]:
    """What is wrong with an artifact (empty when it can serve)."""
    if not isinstance(data, dict):
        return ["not a JSON object"]
    if data.get("format") != ARTIFACT_FORMAT:
        return [f"format {data.get('format')!r}, expected {ARTIFACT_FORMAT}"]
    if data.get("kind") == UNCALIBRATED:
        return []
    problems = [f"missing {key!r}" for key in ("features", "intercept", "thresholds") if key not in data]
    for spec in data.get("features", []):
        if not {"name", "default", "mean", "scale", "coef"} <= set(spec):
            problems.append(f"feature {spec.get('name')!r} lacks name/default/mean/scale/coef")
        elif not spec["scale"] > 0:
            problems.append(f"feature {spec['name']!r} has scale {spec['scale']}")
    iso = data.get("isotonic")
    if iso and (len(iso.get("x", [])) != len(iso.get("y", [])) or len(iso.get("x", [])) < 2):
        problems.append("isotonic breakpoints x and y must have the same length (at least 2)")
    if "version" in data and data["version"] != artifact_version(data):
        problems.append(f"version {data['version']!r} does not match its content ({artifact_version(data)})")
    return problems

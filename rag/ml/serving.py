"""Validated prediction for tabular models: typed request/response schemas generated from training data.

The request schema is derived from the training rows (never the test rows) and stored with the model
(``serving.json``), so serving rebuilds exactly the schema the model was trained under:

- every feature is required (a missing key is an error; ``null`` only where training data had gaps);
- numeric features get bounds: the training range widened by ``range_margin`` (10 %) of its width and
  kept non-negative when the training data were; outside it the model would extrapolate, so the request is
  rejected with the allowed range in the message (pass ``bounds`` to set domain limits instead);
- non-numeric features must be one of the categories seen in training;
- unknown fields are rejected (a typo must not silently become a missing feature).

The response carries the probability of the positive class, a confidence interval, the decision and the
model's name and version. The interval comes from the held-out calibration of the model: the Wilson 95 %
interval of the observed positive rate among test rows whose predicted probability fell in the same
quantile bin; it shows how far the score can be trusted, and is wide when that bin held few rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from rag.errors import InvalidInputError, ModelError
from rag.settings import Settings

DEFAULT_RANGE_MARGIN = 0.1


class FeatureSpec(BaseModel):
    """One input feature as the model saw it in training."""

    name: str
    kind: Literal["integer", "float", "boolean", "categorical"]
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    nullable: bool = False


class FeatureSchema(BaseModel):
    """All features of a model, in training order (serialisable: stored as ``serving.json``)."""

    target: str
    features: list[FeatureSpec]
    range_margin: float = DEFAULT_RANGE_MARGIN

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def infer_feature_schema(
    frame: pd.DataFrame,
    target: str,
    *,
    drop: Sequence[str] = (),
    range_margin: float = DEFAULT_RANGE_MARGIN,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> FeatureSchema:
    """Feature specs from training rows: dtype, range (widened by ``range_margin``), categories, nullability."""
    if target not in frame.columns:
        raise InvalidInputError(f"target column {target!r} is not in the table")
    specs: list[FeatureSpec] = []
    for column in frame.columns:
        if column == target or column in set(drop):
            continue
        values = frame[column]
        nullable = bool(values.isna().any())
        name = str(column)
        if pd.api.types.is_bool_dtype(values):
            specs.append(FeatureSpec(name=name, kind="boolean", nullable=nullable))
        elif pd.api.types.is_numeric_dtype(values):
            observed = values.dropna()
            integer = pd.api.types.is_integer_dtype(values) or bool(
                len(observed) and np.all(np.mod(observed.to_numpy(dtype=float), 1) == 0)
            )
            low, high = (float(observed.min()), float(observed.max())) if len(observed) else (None, None)
            if low is not None and high is not None:
                width = high - low if high > low else max(abs(high), 1.0)
                lo, hi = low - range_margin * width, high + range_margin * width
                if low >= 0:
                    lo = max(lo, 0.0)
                if integer:
                    lo, hi = float(math.floor(lo)), float(math.ceil(hi))
                low, high = lo, hi
            if bounds and name in bounds:
                low, high = bounds[name]
            specs.append(
                FeatureSpec(
                    name=name, kind="integer" if integer else "float", minimum=low, maximum=high, nullable=nullable
                )
            )
        else:
            categories = sorted({str(v) for v in values.dropna().unique()})
            specs.append(FeatureSpec(name=name, kind="categorical", categories=categories, nullable=nullable))
    if not specs:
        raise InvalidInputError("no feature columns left besides the target")
    return FeatureSchema(target=target, features=specs, range_margin=range_margin)


def request_model_from_schema(schema: FeatureSchema, name: str = "PredictionRequest") -> type[BaseModel]:
    """A pydantic model for one prediction request (extra fields forbidden, all features required)."""
    fields: dict[str, Any] = {}
    for spec in schema.features:
        constraints: dict[str, Any] = {}
        annotation: Any
        if spec.kind == "categorical":
            annotation = Literal[tuple(spec.categories or [""])]
        elif spec.kind == "boolean":
            annotation = bool
        else:
            annotation = int if spec.kind == "integer" else float
            if spec.minimum is not None:
                constraints["ge"] = spec.minimum
            if spec.maximum is not None:
                constraints["le"] = spec.maximum
            constraints["allow_inf_nan"] = False
        if spec.nullable:
            annotation = annotation | None
        description = (
            f"one of {spec.categories}"
            if spec.kind == "categorical"
            else f"{spec.kind} in [{spec.minimum}, {spec.maximum}]"
            if spec.kind in {"integer", "float"}
            else spec.kind
        )
        fields[spec.name] = (annotation, Field(..., description=description, **constraints))
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=False), **fields)


def build_request_model(
    frame: pd.DataFrame, target: str, *, drop: Sequence[str] = (), range_margin: float = DEFAULT_RANGE_MARGIN
) -> type[BaseModel]:
    """The request schema for a model trained on ``frame`` (features = all columns but target/drop)."""
    return request_model_from_schema(infer_feature_schema(frame, target, drop=drop, range_margin=range_margin))


class CalibrationBin(BaseModel):
    """Held-out rows whose predicted probability fell in ``[low, high]`` and how many were positive."""

    low: float
    high: float
    count: int
    positives: int
    observed_rate: float
    ci_low: float
    ci_high: float


def wilson_interval(positives: int, count: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved near 0 and 1, unlike the normal approximation)."""
    if count == 0:
        return (0.0, 1.0)
    p = positives / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def calibration_bins(y_true: np.ndarray, probability: np.ndarray, n_bins: int = 5) -> list[CalibrationBin]:
    """Quantile bins of held-out predictions with the observed positive rate and its Wilson interval."""
    truth = np.asarray(y_true).astype(int)
    prob = np.asarray(probability, dtype=float)
    edges = np.unique(np.quantile(prob, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([0.0, 1.0])
    idx = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, edges.size - 2)
    bins = []
    for i in range(edges.size - 1):
        mask = idx == i
        count, positives = int(mask.sum()), int(truth[mask].sum())
        low, high = wilson_interval(positives, count)
        bins.append(
            CalibrationBin(
                low=0.0 if i == 0 else float(edges[i]),
                high=1.0 if i == edges.size - 2 else float(edges[i + 1]),
                count=count,
                positives=positives,
                observed_rate=positives / count if count else math.nan,
                ci_low=low,
                ci_high=high,
            )
        )
    return bins


class ServingInfo(BaseModel):
    """What serving needs besides the estimator; logged with each run as ``serving.json``."""

    schema_: FeatureSchema = Field(alias="schema")
    positive_label: str
    negative_label: str
    threshold: float = 0.5
    calibration: list[CalibrationBin]

    model_config = ConfigDict(populate_by_name=True)


class PredictionResponse(BaseModel):
    """A validated prediction: probability of the positive class with its interval and the model version."""

    probability: float = Field(ge=0, le=1)
    ci_low: float = Field(ge=0, le=1)
    ci_high: float = Field(ge=0, le=1)
    ci_method: str
    predicted_label: str
    positive_label: str
    threshold: float = Field(ge=0, le=1)
    model_name: str
    model_version: str

    @model_validator(mode="after")
    def _ordered(self) -> PredictionResponse:
        if self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low} is above ci_high {self.ci_high}")
        return self


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "request"
        given = err.get("input")
        shown = "" if err["type"] in {"missing", "extra_forbidden"} else f" (got {given!r})"
        parts.append(f"{where}: {err['msg']}{shown}")
    return "; ".join(parts)


class TabularPredictor:
    """Validated prediction with a trained pipeline: request schema in, ``PredictionResponse`` out."""

    def __init__(self, model: Any, info: ServingInfo, *, model_name: str, model_version: str) -> None:
        self.model = model
        self.info = info
        self.model_name = model_name
        self.model_version = model_version
        self.request_model = request_model_from_schema(info.schema_)

    @classmethod
    def from_registry(cls, settings: Settings, name: str, alias: str = "production") -> TabularPredictor:
        """Load the version behind ``alias`` (and its ``serving.json``) from the MLflow registry."""
        import json

        from rag.ml.registry import client_for, download_run_artifact, load_sklearn_version, require_version

        client = client_for(settings)
        version = require_version(client, name, alias)
        model = load_sklearn_version(settings, client, version)
        path = download_run_artifact(settings, version.run_id, "serving.json")
        info = ServingInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))
        return cls(model, info, model_name=name, model_version=str(version.version))

    def validate(self, payload: Mapping[str, Any]) -> BaseModel:
        """Check one request; raises ``InvalidInputError`` naming each bad field and the allowed values."""
        if not isinstance(payload, Mapping):
            raise InvalidInputError(f"a prediction request must be an object, got {type(payload).__name__}")
        try:
            return self.request_model.model_validate(dict(payload))
        except ValidationError as exc:
            raise InvalidInputError(f"invalid prediction request: {_describe_errors(exc)}") from None

    def _interval(self, probability: float) -> tuple[float, float, str]:
        for b in self.info.calibration:
            if b.low <= probability <= b.high and b.count:
                return (
                    b.ci_low,
                    b.ci_high,
                    f"Wilson 95% interval of the observed positive rate of {b.count} held-out rows scored in "
                    f"[{b.low:.3f}, {b.high:.3f}]",
                )
        return (0.0, 1.0, "no held-out rows in this score range: interval unknown")

    def predict_many(self, payloads: Sequence[Mapping[str, Any]]) -> list[PredictionResponse]:
        requests = [self.validate(p) for p in payloads]
        if not requests:
            return []
        frame = pd.DataFrame([r.model_dump() for r in requests], columns=self.info.schema_.names)
        try:
            probabilities = self.model.predict_proba(frame)
        except Exception as exc:
            raise ModelError(f"model {self.model_name} v{self.model_version} failed to predict: {exc}") from exc
        classes = [str(c) for c in getattr(self.model, "classes_", [0, 1])]
        column = classes.index("1") if "1" in classes else len(classes) - 1
        responses = []
        for probability in probabilities[:, column]:
            p = float(probability)
            if not math.isfinite(p) or not 0 <= p <= 1:
                raise ModelError(f"model {self.model_name} returned an invalid probability {p}")
            low, high, method = self._interval(p)
            responses.append(
                PredictionResponse(
                    probability=p,
                    ci_low=low,
                    ci_high=high,
                    ci_method=method,
                    predicted_label=self.info.positive_label if p >= self.info.threshold else self.info.negative_label,
                    positive_label=self.info.positive_label,
                    threshold=self.info.threshold,
                    model_name=self.model_name,
                    model_version=self.model_version,
                )
            )
        return responses

    def predict(self, payload: Mapping[str, Any]) -> PredictionResponse:
        """Validate one request and predict; raises ``InvalidInputError`` for bad input."""
        return self.predict_many([payload])[0]

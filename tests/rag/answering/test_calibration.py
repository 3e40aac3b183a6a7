"""The serving side of the calibrated confidence: artifact round trip, version hash, prediction, thresholds, meaning."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.answering.calibration import (
    NEVER_ANSWER,
    UNCALIBRATED,
    ConfidenceModel,
    artifact_version,
    heuristic_confidence,
    question_form,
    validate_artifact,
)
from rag.errors import ConfigError
from rag.settings import Settings


def artifact(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": 1,
        "kind": "logistic",
        "features": [
            {"name": "retrieval.top_dense", "default": 0.5, "mean": 0.5, "scale": 0.1, "coef": 2.0},
            {"name": "verify.lp_mean", "default": -0.4, "mean": -0.4, "scale": 0.2, "coef": 1.0},
            {"name": "missing:verify.lp_mean", "default": 0.0, "mean": 0.1, "scale": 0.3, "coef": -0.5},
        ],
        "intercept": 0.25,
        "isotonic": None,
        "thresholds": [
            {"target_error_rate": 0.05, "threshold": 0.9, "feasible": True},
            {"target_error_rate": 0.1, "threshold": 0.7, "feasible": True},
            {"target_error_rate": 1.0, "threshold": 0.0, "feasible": True},
        ],
        "reliability": [
            {"low": 0.0, "high": 0.5, "n": 3, "correct": 1},
            {"low": 0.5, "high": 0.9, "n": 10, "correct": 7},
            {"low": 0.9, "high": 1.0, "n": 20, "correct": 18},
        ],
    }
    data.update(changes)
    data["version"] = artifact_version(data)
    return data


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_prediction_is_the_documented_formula_with_defaults_and_missing_indicator() -> None:
    model = ConfidenceModel.from_artifact(artifact())
    full = {"retrieval.top_dense": 0.7, "verify.lp_mean": -0.2}
    z = 2.0 * (0.7 - 0.5) / 0.1 + 1.0 * (-0.2 + 0.4) / 0.2 - 0.5 * (0 - 0.1) / 0.3 + 0.25
    assert model.predict(full) == round(sigmoid(z), 4)
    # lp missing: its default (-0.4) and the indicator set to 1
    z_missing = 2.0 * 2.0 + 0.0 - 0.5 * (1 - 0.1) / 0.3 + 0.25
    assert model.predict({"retrieval.top_dense": 0.7}) == round(sigmoid(z_missing), 4)
    assert model.predict({"retrieval.top_dense": 0.7, "verify.lp_mean": float("nan")}) == round(sigmoid(z_missing), 4)


def test_isotonic_breakpoints_map_the_logistic_output() -> None:
    model = ConfidenceModel.from_artifact(artifact(isotonic={"x": [0.0, 0.5, 0.5001, 1.0], "y": [0.1, 0.1, 0.8, 0.8]}))
    low = model.predict({"retrieval.top_dense": 0.0, "verify.lp_mean": -1.0})
    high = model.predict({"retrieval.top_dense": 0.9, "verify.lp_mean": 0.0})
    assert (low, high) == (0.1, 0.8)


def test_threshold_is_the_largest_grid_target_not_above_the_setting() -> None:
    data = artifact()
    assert ConfidenceModel.from_artifact(data, 0.05).threshold == 0.9
    assert ConfidenceModel.from_artifact(data, 0.07).threshold == 0.9  # conservative: 0.05's threshold
    assert ConfidenceModel.from_artifact(data, 0.1).threshold == 0.7
    assert ConfidenceModel.from_artifact(data, 0.01).threshold == NEVER_ANSWER  # below the grid: never answer
    assert ConfidenceModel.from_artifact(data, 1.0).threshold == 0.0  # collecting: never abstain on confidence


def test_an_uncertified_target_falls_back_to_the_minimum_confidence_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = artifact(thresholds=[
        {"target_error_rate": 0.05, "threshold": NEVER_ANSWER, "feasible": False},
        {"target_error_rate": 0.1, "threshold": 0.7, "feasible": True},
        {"target_error_rate": 1.0, "threshold": 0.0, "feasible": True},
    ])  # fmt: skip
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    settings = Settings(data_dir=tmp_path / "d", calibration_path=path, uncertified_min_confidence=0.6)
    with caplog.at_level(logging.WARNING, logger="rag"):
        model = ConfidenceModel.from_settings(settings)
    assert not model.certified and model.threshold == 0.6
    assert model.to_dict()["threshold_rule"] == "uncertified_min_confidence"
    assert "certifies no threshold for RAG_TARGET_ERROR_RATE=0.05" in caplog.text and "[0.1, 1.0]" in caplog.text
    strict = ConfidenceModel.from_settings(settings.with_overrides(uncertified_min_confidence=1.01))
    assert strict.threshold == NEVER_ANSWER  # the strict reading: no certified threshold, no answer
    assert ConfidenceModel.from_artifact(data, 0.05).threshold == NEVER_ANSWER  # without settings: strict
    certified = ConfidenceModel.from_settings(settings.with_overrides(target_error_rate=0.1))
    assert certified.certified and certified.threshold == 0.7


def test_round_trip_through_a_file_and_the_setting(tmp_path: Path) -> None:
    data = artifact()
    path = tmp_path / f"{data['version']}.json"
    path.write_text(json.dumps(data))
    settings = Settings(data_dir=tmp_path / "d", calibration_path=path, target_error_rate=0.1)
    model = ConfidenceModel.from_settings(settings)
    assert model.version == data["version"] == artifact_version(json.loads(path.read_text()))
    assert model.threshold == 0.7
    assert model.to_dict()["version"] == data["version"]
    rows = [{"retrieval.top_dense": v} for v in np.linspace(0, 1, 7)]
    assert np.array_equal(model.predict_many(rows), ConfidenceModel.from_artifact(data).predict_many(rows))


def test_version_hash_changes_with_content_and_a_tampered_file_is_refused(tmp_path: Path) -> None:
    data = artifact()
    other = artifact(intercept=0.3)
    assert data["version"] != other["version"]
    assert len(data["version"]) == 12
    tampered = dict(data, intercept=1.0)
    assert any("does not match" in p for p in validate_artifact(tampered))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tampered))
    with pytest.raises(ConfigError, match="does not match"):
        ConfidenceModel.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        ConfidenceModel.load(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ConfidenceModel.load(path)


def test_meaning_reads_the_test_reliability_table() -> None:
    model = ConfidenceModel.from_artifact(artifact())
    assert model.meaning(0.95) == (
        "answers at this confidence (0.9-1.0) were right 9 times in 10 on the test set (18 of 20)"
    )
    assert model.meaning(1.0).startswith("answers at this confidence (0.9-1.0)")
    assert "7 of 10" in model.meaning(0.6)
    assert "too few" in model.meaning(0.2)


def test_uncalibrated_model_keeps_the_old_heuristic_and_never_abstains(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    model = ConfidenceModel.uncalibrated(settings)
    features = {"retrieval.top_dense": 0.6, "generation.cited": 1.0}
    assert model.version == UNCALIBRATED and model.threshold == 0.0
    assert model.predict(features) == heuristic_confidence(features, settings)
    expected = 1 / (1 + math.exp(-settings.confidence_slope * (0.6 - settings.confidence_center)))
    assert model.predict(features) == round(expected, 4)
    assert model.predict({"retrieval.top_dense": 0.6, "generation.cited": 0.0}) == round(
        expected * settings.uncited_factor, 4)
    assert "uncalibrated" in model.meaning(0.9)


def test_question_form_tells_decisions_and_statements_from_fact_questions() -> None:
    assert question_form("Does intraoperative monitoring improve outcome?") == {
        "question.yes_no": 1.0, "question.statement": 0.0}
    assert question_form("Is coral a plant, a rock or an animal?")["question.yes_no"] == 0.0  # options, not yes/no
    assert question_form("Which king is the decree about?") == {"question.yes_no": 0.0, "question.statement": 0.0}
    assert question_form("1/2000 in UK have abnormal PrP positivity.") == {
        "question.yes_no": 0.0, "question.statement": 1.0}
    assert question_form("Treatment as prevention: is it feasible?")["question.statement"] == 0.0

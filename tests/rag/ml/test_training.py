"""Tabular training against a real local MLflow store (sqlite + artifact folder): reproducibility, logging,
the promotion gate and validated serving. Training runs are shared through module fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import InvalidInputError, NotFoundError
from rag.ml.promotion import promote_model
from rag.ml.registry import PREVIOUS_PRODUCTION, PRODUCTION, STAGING, client_for
from rag.ml.serving import TabularPredictor, build_request_model, infer_feature_schema, wilson_interval
from rag.ml.training import TrainingConfig, TrainingResult, detect_sensitive, train_tabular
from rag.settings import Settings

NAME = "german-risk-test"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("ml-training") / "data")


@pytest.fixture(scope="module")
def config(german_csv: Path) -> TrainingConfig:
    return TrainingConfig(
        data=german_csv,
        target="risk",
        model="rf",
        sensitive=["sex", "age"],
        n_resamples=300,
        cv_folds=3,
        registered_name=NAME,
    )


@pytest.fixture(scope="module")
def first_run(settings: Settings, config: TrainingConfig) -> TrainingResult:
    return train_tabular(settings, config)


@pytest.fixture(scope="module")
def second_run(settings: Settings, config: TrainingConfig, first_run: TrainingResult) -> TrainingResult:
    return train_tabular(settings, config)


def test_training_is_bit_for_bit_reproducible(first_run: TrainingResult, second_run: TrainingResult) -> None:
    assert second_run.run_id != first_run.run_id
    assert second_run.metrics == first_run.metrics  # exact float equality, CIs included
    assert second_run.slices == first_run.slices
    assert second_run.best_params == first_run.best_params
    assert second_run.model_content_sha256 == first_run.model_content_sha256
    assert (first_run.model_version, second_run.model_version) == ("1", "2")


def test_result_has_held_out_metrics_with_cis_and_slices(first_run: TrainingResult) -> None:
    auc = first_run.metrics["test"]["roc_auc"]
    assert auc.value is not None and auc.ci_low is not None and auc.ci_high is not None
    assert auc.ci_low < auc.value < auc.ci_high
    assert 0.65 < auc.value < 0.9  # German Credit is a hard, noisy problem
    assert set(first_run.metrics) == {"validation", "test"}
    assert set(first_run.metrics["test"]) == {"roc_auc", "f1_weighted", "accuracy", "brier"}
    assert first_run.data["test_rows"] == 200 and first_run.data["train_validation_rows"] == 800
    assert first_run.data["sha256"] == "321ff0594e1f887ad6bf05dc51d34c616f1c32dca8c7cdb141434df295f67997"
    slices = {(s.metric, s.slice_column, s.slice_value) for s in first_run.slices}
    assert ("roc_auc", "sex", "female") in slices and ("accuracy", "sex", "male") in slices
    age_buckets = {s.slice_value for s in first_run.slices if s.slice_column == "age"}
    assert len(age_buckets) == 4  # quartiles of the train+validation ages
    assert first_run.data["bucket_edges"]["age"] == sorted(first_run.data["bucket_edges"]["age"])


def test_mlflow_run_holds_params_metrics_artifacts_model_and_alias(
    settings: Settings, first_run: TrainingResult
) -> None:
    client = client_for(settings)
    run = client.get_run(first_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data_sha256"] == first_run.data["sha256"]
    assert run.data.params["seed"] == "42" and run.data.params["model_type"] == "rf"
    for key in ("test_roc_auc", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "val_f1_weighted", "test_brier"):
        assert key in run.data.metrics
    assert run.data.metrics["test_roc_auc"] == first_run.metrics["test"]["roc_auc"].value
    assert run.data.tags["model_sha256"] == first_run.model_sha256
    artifacts = {a.path for a in client.list_artifacts(first_run.run_id)}
    assert {
        "model_card.md",
        "reliability.png",
        "roc.png",
        "slices.csv",
        "serving.json",
        "model",
        "heldout",
    } <= artifacts
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    assert root.is_relative_to(settings.artifacts_dir.resolve())
    card = (root / "model_card.md").read_text()
    for heading in ("## Intended use", "## Training data", "## Slices", "## Limitations", "## Monitoring"):
        assert heading in card
    assert f"{first_run.metrics['test']['roc_auc'].value:.4f}" in card
    assert "DbCL" in card  # the data's licence, from the README next to the CSV
    mlmodel = (root / "model" / "MLmodel").read_text()
    assert "signature" in mlmodel and "predict_proba" in mlmodel
    assert (root / "model" / "input_example.json").is_file()
    version = client.get_model_version(NAME, first_run.model_version)
    assert version.run_id == first_run.run_id and version.tags["model_sha256"] == first_run.model_sha256
    assert STAGING in client.get_registered_model(NAME).aliases  # the newest run holds staging


def test_promotion_gate(
    settings: Settings,
    first_run: TrainingResult,
    second_run: TrainingResult,
    german_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = client_for(settings)
    first = promote_model(settings, NAME)  # staging = second run, no production yet
    assert first.promoted and first.production is None
    assert str(client.get_model_version_by_alias(NAME, PRODUCTION).version) == second_run.model_version

    # staging -> the first, identical run: not worse on the same held-out rows, so it is promoted
    client.set_registered_model_alias(NAME, STAGING, first_run.model_version)
    equal = promote_model(settings, NAME)
    assert equal.promoted and equal.difference == pytest.approx(0.0) and equal.heldout_rows == 200
    assert str(client.get_model_version_by_alias(NAME, PREVIOUS_PRODUCTION).version) == second_run.model_version

    # a worse model trained from the CLI (sex as the only feature) is refused with exit status 1
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    dropped = ("job", "housing", "saving_accounts", "checking_account", "credit_amount", "duration", "purpose", "age")
    drops = [arg for column in dropped for arg in ("--drop", column)]
    trained = runner.invoke(
        app,
        [
            *("train", "--data", str(german_csv), "--target", "risk", "--model", "logreg", "--name", NAME),
            *("--n-resamples", "200", "--sensitive", "sex", *drops, "--json"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    payload = json.loads(trained.stdout)
    assert payload["model_version"] == "3" and payload["alias"] == "staging"
    assert payload["metrics"]["test"]["roc_auc"]["ci_low"] is not None
    assert any(row["slice_column"] == "sex" for row in payload["slices"])

    refused = runner.invoke(app, ["promote-model", NAME, "--json"])
    assert refused.exit_code == 1, refused.output
    decision = json.loads(refused.stdout)
    assert decision["outcome"] == "refused" and decision["difference"] < 0
    assert decision["staging"]["version"] == "3" and decision["production"]["version"] == first_run.model_version
    low, high = decision["difference_ci"]
    assert low <= decision["difference"] <= high
    assert str(client.get_model_version_by_alias(NAME, PRODUCTION).version) == first_run.model_version
    with pytest.raises(NotFoundError):
        promote_model(settings, "no-such-model")


def test_request_schema_from_training_data(german: pd.DataFrame) -> None:
    model = build_request_model(german, "risk")
    row = german.drop(columns=["risk"]).iloc[0].to_dict()
    assert model.model_validate(row).model_dump() == row
    schema = infer_feature_schema(german, "risk")
    age = next(f for f in schema.features if f.name == "age")
    assert age.kind == "integer" and age.minimum <= 19 and 75 <= age.maximum < 130
    sex = next(f for f in schema.features if f.name == "sex")
    assert sex.categories == ["female", "male"]
    for bad in ({**row, "age": 200}, {**row, "sex": "unknown"}, {**row, "extra": 1}, {**row, "age": None}):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    without = dict(row)
    without.pop("duration")
    with pytest.raises(ValueError, match="duration"):
        model.model_validate(without)


def test_validated_prediction_from_the_registry(
    settings: Settings, first_run: TrainingResult, german: pd.DataFrame
) -> None:
    client_for(settings).set_registered_model_alias(NAME, "serving-test", first_run.model_version)
    predictor = TabularPredictor.from_registry(settings, NAME, alias="serving-test")
    assert predictor.model_version == first_run.model_version
    row: dict[str, Any] = german.drop(columns=["risk"]).iloc[1].to_dict()
    response = predictor.predict(row)
    assert 0 <= response.ci_low <= response.ci_high <= 1
    assert 0 <= response.probability <= 1
    assert response.model_name == NAME and response.model_version == predictor.model_version
    assert response.predicted_label in {"0", "1"} and response.positive_label == "1"
    batch = predictor.predict_many([row, german.drop(columns=["risk"]).iloc[2].to_dict()])
    assert batch[0] == response
    with pytest.raises(InvalidInputError) as error:
        predictor.predict({**row, "age": 200, "sex": "robot"})
    message = str(error.value)
    assert "age" in message and "less than or equal" in message and "200" in message
    assert "sex" in message and "'female'" in message
    with pytest.raises(InvalidInputError, match="must be an object"):
        predictor.predict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_sensitive_columns_are_detected_by_name(german: pd.DataFrame) -> None:
    assert detect_sensitive(list(german.columns), "risk") == ["sex", "age"]
    assert detect_sensitive(["Gender", "income", "age"], "age") == ["Gender"]


def test_wilson_interval() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_training_rejects_bad_input(settings: Settings, german_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not in"):
        train_tabular(settings, TrainingConfig(data=german_csv, target="nope"))
    with pytest.raises(InvalidInputError, match="only binary"):
        train_tabular(settings, TrainingConfig(data=german_csv, target="purpose"))
    with pytest.raises(InvalidInputError, match="does not exist"):
        train_tabular(settings, TrainingConfig(data=tmp_path / "missing.csv", target="risk"))
    assert os.environ.get("MLFLOW_TRACKING_URI") is None  # nothing global was set by training

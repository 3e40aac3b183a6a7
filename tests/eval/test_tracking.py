"""MLflow logging (embedded sqlite and a real ``mlflow server``), nothing lost when MLflow is down, the
release gate's exit codes through the CLI, and promotion to the production baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from eval.runner import EvalOptions
from eval.tracking import PENDING, log_pending, pending_runs
from eval.workflow import run_eval
from rag.answering.production import read_production
from rag.cli import app
from rag.indexing.embedding import Embedder
from rag.settings import Settings
from tests.conftest import free_port


def beir_options(dataset: Path, **changes: object) -> EvalOptions:
    return EvalOptions(dataset=dataset, judge="none", progress=False, **changes)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory (and so one embedded sqlite tracking store) for the module: creating the MLflow
    schema is the slow part of a first run."""
    return tmp_path_factory.mktemp("tracking") / "data"


def test_embedded_sqlite_run_has_params_metrics_artifacts(
    tiny_beir: Path, embedder: Embedder, data_dir: Path
) -> None:
    settings = Settings(data_dir=data_dir, eval_min_slice_size=2, eval_bootstrap_resamples=200)
    outcome = run_eval(settings, beir_options(tiny_beir), embedder=embedder)
    assert outcome.mlflow_error is None
    result = outcome.result
    assert settings.tracking_uri.startswith("sqlite:///") and result.tracking_uri == settings.tracking_uri
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["pipeline.retrieval.mode"] == "hybrid"
    assert params["dataset.sha256"] == result.dataset["sha256"] and params["seed"] == "42"
    assert params["index_version"] == result.index_version and params["judge.judge_id"] == "none"
    assert metrics["ndcg_at_10"] == pytest.approx(result.metrics["ndcg_at_10"].value)
    assert metrics["ndcg_at_10/ci_low"] <= metrics["ndcg_at_10"] <= metrics["ndcg_at_10/ci_high"]
    assert "mode/bm25/ndcg_at_10" in metrics
    assert any(k.startswith("slice/question_length/") for k in metrics)
    assert tags["git_commit"] and tags["rag_kind"] == "eval" and tags["rag_dataset_hash"] == result.dataset["sha256"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples.csv", "samples.jsonl", "slices.csv", "report.html", "config.json", "summary.json"} <= artifacts
    assert (settings.artifacts_dir / "rag-eval").is_dir()  # artifacts under data_dir, not the cwd
    assert not (outcome.run_dir / PENDING).exists()


def test_mlflow_down_saves_locally_then_logs_to_a_real_server(
    tiny_beir: Path, embedder: Embedder, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
                    eval_bootstrap_resamples=200)
    outcome = run_eval(down, beir_options(tiny_beir, experiment="pending-test"), embedder=embedder)
    assert outcome.mlflow_error and "rag eval --log-pending" in outcome.mlflow_error
    assert (outcome.run_dir / PENDING).is_file() and (outcome.run_dir / "samples.csv").is_file()
    assert pending_runs(down) == [outcome.run_dir]

    up = down.with_overrides(mlflow_tracking_uri=mlflow_server)
    logged = log_pending(up)
    assert len(logged) == 1 and "run_id" in logged[0]
    assert pending_runs(up) == []
    client = MlflowClient(mlflow_server)
    run = client.get_run(logged[0]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "pending-test"
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(outcome.result.metrics["ndcg_at_10"].value)
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["mlflow_run_id"] == run.info.run_id


def test_gate_exit_codes_and_promotion(
    tiny_qa: tuple[Path, Path, Path], data_dir: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, full, partial = tiny_qa
    monkeypatch.setattr("eval.runner.Embedder", lambda settings: embedder)  # the CLI loads the same model
    runner = CliRunner()
    env = {"RAG_DATA_DIR": str(data_dir), "RAG_EVAL_BOOTSTRAP_RESAMPLES": "200"}
    base = ["eval", "--dataset", str(path), "--judge", "none", "--no-answers", "--no-progress"]

    def invoke(*args: str) -> tuple[int, str]:
        done = runner.invoke(app, list(args), env=env)
        return done.exit_code, done.output

    code, out = invoke(*base, "--corpus", str(full), "--json")
    assert code == 0, out
    first = json.loads(out[out.index("{"):])
    run_id = first["mlflow_run_id"]

    code, out = invoke(*base, "--corpus", str(full), "--compare", "production")
    assert code == 3 and "no production run" in out

    code, out = invoke("promote", run_id)
    assert code == 0 and "PROMOTED" in out
    production = read_production(Settings(data_dir=data_dir))
    assert production is not None and production.run_id == run_id
    assert production.config_version == first["config_version"] and production.metrics["ndcg_at_10"] > 0.9

    code, out = invoke(*base, "--corpus", str(full), "--compare", "production")
    assert code == 0 and "GATE PASSED" in out, out  # same config, index and seed: identical metrics

    # the same questions against an index that lost two relevant documents: a regression
    code, out = invoke(*base, "--corpus", str(partial), "--collection", "eval-partial", "--compare", "production")
    assert code == 1 and "GATE FAILED" in out and "REGRESSED" in out, out
    worse_id = next(line.split()[2] for line in out.splitlines() if line.startswith("MLflow run "))
    code, out = invoke("promote", worse_id)
    assert code == 2 and "failed the release gate" in out
    assert read_production(Settings(data_dir=data_dir)).run_id == run_id  # type: ignore[union-attr]

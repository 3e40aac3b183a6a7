"""`rag tune-embedder` end to end on a tiny labelled set: a contract model the Embedder loads, MLflow, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rag.cli import app
from rag.indexing.embedding import Embedder, load_description
from rag.settings import Settings
from tests.conftest import SAMPLES


def tiny_dataset(path: Path) -> Path:
    rows = [
        ("How does a forager tell nestmates where food is?", "science/honeybees.md"),
        ("How many eggs can a queen bee lay in a day?", "science/honeybees.md"),
        ("Who deciphered the Egyptian hieroglyphs?", "history/rosetta_stone.html"),
        ("What are fringing reefs?", "science/coral_reefs.html"),
        ("How does water get from the sea into clouds?", "science/water_cycle.md"),
        ("When did Gutenberg print his Bible?", "history/printing_press.md"),
    ]
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "reference_doc_ids": [d]}) + "\n"
                            for i, (q, d) in enumerate(rows)))
    return path


def test_tune_embedder_writes_a_model_the_embedder_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dataset = tiny_dataset(tmp_path / "qa.jsonl")
    env = {"RAG_DATA_DIR": str(data_dir)}
    args = ["tune-embedder", "--dataset", str(dataset), "--corpus", str(SAMPLES / "corpus"), "--epochs", "1",
            "--batch-size", "3", "--max-seq-length", "64", "--train-layers", "1", "--mini-batch-size", "0", "--json"]
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)  # the progress bar went to stderr
    assert "tuning embedder" in done.stderr
    model_path = Path(result["model_path"])
    assert model_path.parent == (data_dir / "models" / "tuned").resolve() and model_path.name == result["version"]
    description = load_description(model_path)  # the embedder's own validation of the contract
    assert description["pooling"] == "cls" and description["max_tokens"] == 512
    assert result["pairs"] == 6 and 2 <= result["metrics"]["steps"] <= 6  # batches of 3 never repeat a text
    assert result["metrics"]["int8_cosine_min"] > 0.9

    tuned = Embedder(Settings(data_dir=data_dir, embedding_model_path=model_path))
    default = Embedder(Settings(data_dir=data_dir, embedding_model="bge-small-en-v1.5"))
    assert tuned.weights_sha256 != default.weights_sha256  # a new index version: the next ingest re-embeds
    vectors = tuned.embed(["The waggle dance", "Rosetta Stone"])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=Settings(data_dir=data_dir).tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["data_sha256"] == result["data_sha256"]
    assert run.data.tags["artifact_sha256"] == result["artifact_sha256"]
    assert run.data.params["config_seed"] == "42" and "train_loss" in run.data.metrics


def test_tune_embedder_refuses_the_test_split(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["tune-embedder", "--dataset", str(tmp_path), "--split", "test"], env={"RAG_DATA_DIR": str(tmp_path)}
    )
    assert done.exit_code != 0 and "test split" in done.output

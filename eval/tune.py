"""``rag tune-embedder``: fine-tune the bundled embedder on labelled (question, relevant document) pairs.

Lives in the eval job because the labelled datasets are loaded here (``eval.datasets``: a BEIR folder's qrels
split, or our JSONL with ``reference_doc_ids`` plus ``--corpus``); the training, export and manifest are in
``rag.indexing.tuning``. Only the split named by ``--split`` is read: tune on train, report on test.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import typer

from eval.datasets import Dataset, load_dataset
from rag.errors import InvalidInputError, StoreUnavailableError
from rag.indexing.tuning import TrainStats, TuneConfig, TuneResult, passage_text, tune_embedder
from rag.settings import Settings

log = logging.getLogger(__name__)
PASSAGE_CHARS = 1200  # a file corpus' documents are cut into windows this long; the best-matching one is the positive


def _beir_corpus(path: Path) -> dict[str, str]:
    corpus: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                corpus[str(record["_id"])] = passage_text(str(record.get("title") or ""), str(record["text"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInputError(f"{path}:{number}: a corpus record needs '_id' and 'text' ({exc})") from exc
    return corpus


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{3,}", text.lower()))


def _best_window(question: str, title: str, text: str) -> str:
    """The passage of a long document that shares the most words with the question (a crude, cheap locator)."""
    if len(text) <= PASSAGE_CHARS:
        return passage_text(title, text)
    step = PASSAGE_CHARS // 2
    windows = [text[i : i + PASSAGE_CHARS] for i in range(0, max(1, len(text) - step), step)]
    words = _words(question)
    best = max(windows, key=lambda w: len(words & _words(w)))
    return passage_text(title, best)


def _file_corpus(settings: Settings, root: Path) -> dict[str, tuple[str, str]]:
    """doc_id -> (title, text) for the files under ``root``, loaded by the ingestion job's own loaders."""
    from ingest.loaders import discover, iter_jsonl, load_file
    from rag.errors import DocumentLoadError

    files, _ = discover(root)
    docs: dict[str, tuple[str, str]] = {}
    for source in files:
        try:
            loaded = list(filter(None, (r.document for r in iter_jsonl(source.path, settings.max_file_bytes)))) \
                if source.format == "jsonl" else [load_file(source, settings.max_file_bytes)]
        except DocumentLoadError as exc:
            log.warning("skipped %s: %s", source.path, exc)
            continue
        for document in loaded:
            docs[document.doc_id] = (document.title, document.text)
    return docs


def training_data(
    settings: Settings, dataset: Dataset
) -> tuple[list[tuple[str, set[str]]], dict[str, str], list[set[str]] | None]:
    """(question, gold ids) samples, the passage text per id, and per sample the ids never to use as negatives."""
    samples = [(s.question, s.relevant_doc_ids) for s in dataset.samples if s.relevant_doc_ids]
    if not samples:
        raise InvalidInputError(
            f"{dataset.path} has no question with relevant documents",
            hint="label questions with reference_doc_ids (JSONL) or use a BEIR qrels split",
        )
    if dataset.kind == "beir":
        return samples, _beir_corpus(dataset.corpus[0]), None
    if dataset.kind != "jsonl" or not dataset.corpus:
        raise InvalidInputError("a JSONL dataset needs --corpus (the documents its reference_doc_ids name)")
    docs = _file_corpus(settings, dataset.corpus[0])
    # A file can be long: pair each question with its best window of each gold document, under a per-pair id.
    corpus = {doc_id: passage_text(title, text[:PASSAGE_CHARS]) for doc_id, (title, text) in docs.items()}
    paired: list[tuple[str, set[str]]] = []
    for number, (question, gold) in enumerate(samples):
        ids = set()
        for doc_id in sorted(gold & set(docs)):
            key = f"{doc_id}#q{number}"
            corpus[key] = _best_window(question, *docs[doc_id])
            ids.add(key)
        paired.append((question, ids))
    return paired, corpus, [gold for _, gold in samples]  # a gold document is never a negative


def log_run(settings: Settings, result: TuneResult, stats: TrainStats, dataset: Dataset, experiment: str) -> str:
    """One MLflow run: params (config, dataset), the data and artifact hashes, metrics, the manifest."""
    from mlflow.entities import Metric, Param, RunTag

    from rag.ml.registry import client_for, ensure_experiment

    client = client_for(settings)
    experiment_id = ensure_experiment(client, settings, experiment)
    run = client.create_run(
        experiment_id, run_name=f"tune-{result.version}",
        tags={"mlflow.source.name": "rag tune-embedder", "data_sha256": result.data_sha256, "task": "embedder"},
    )
    run_id = str(run.info.run_id)
    params: dict[str, Any] = {
        **{f"config_{k}": v for k, v in result.config.items()},
        "dataset_path": dataset.path, "dataset_kind": dataset.kind, "dataset_split": dataset.split or "",
        "dataset_sha256": dataset.sha256, "data_sha256": result.data_sha256, "pairs": result.pairs,
        "model_version": result.version, "model_path": str(result.model_path),
    }
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in sorted(result.metrics.items())]
    metrics += [Metric("train_loss", loss, now, step) for step, loss in enumerate(stats.losses)]
    client.log_batch(
        run_id, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
        tags=[RunTag("artifact_sha256", result.artifact_sha256)],
    )
    client.log_artifact(run_id, str(result.model_path / "ragkit-embedder.json"))
    client.set_terminated(run_id)
    return run_id


def register(app: typer.Typer) -> None:
    # imported here, not at the top: rag.cli imports this module while it registers its plugins
    from rag.cli import emit_json, handles_errors, load_settings

    @app.command("tune-embedder")
    @handles_errors
    def tune_command(
        dataset: Path = typer.Option(..., "--dataset", help="A BEIR folder (qrels split) or our QA .jsonl."),
        split: str = typer.Option("train", "--split", help="BEIR qrels split to train on (never the test split)."),
        corpus: Path | None = typer.Option(None, "--corpus", help="Documents a JSONL dataset's ids refer to."),
        epochs: int = typer.Option(3, "--epochs", min=1, max=20),
        batch_size: int = typer.Option(32, "--batch-size", min=2, max=512),
        max_seq_length: int = typer.Option(256, "--max-seq-length", min=32, max=512),
        learning_rate: float = typer.Option(5e-5, "--learning-rate", min=1e-7, max=1e-3),
        seed: int = typer.Option(42, "--seed"),
        train_layers: int = typer.Option(0, "--train-layers", min=0, help="Top layers that learn (0 = all)."),
        mini_batch_size: int = typer.Option(
            16, "--mini-batch-size", min=0, help="GradCache chunk (bounds memory; same loss); 0 = plain in-batch loss."
        ),
        hard_negatives: bool = typer.Option(True, "--hard-negatives/--no-hard-negatives"),
        negative_miner: str = typer.Option(
            "bm25", "--negatives", help="Who mines the hard negatives: bm25 or dense (the untuned embedder)."
        ),
        experiment: str = typer.Option("rag-tune-embedder", "--experiment", help="MLflow experiment name."),
        mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the run to MLflow."),
        as_json: bool = typer.Option(False, "--json", help='Print {"model_path": ..., "metrics": ...} as JSON.'),
    ) -> None:
        """Fine-tune the bundled embedder on labelled pairs; prints the model path for RAG_EMBEDDING_MODEL_PATH."""
        if split == "test":
            raise InvalidInputError("refusing to tune on the test split", hint="use --split train; report on test")
        settings = load_settings()
        data = load_dataset(dataset, split=split, corpus=corpus)
        samples, passages, related = training_data(settings, data)
        config = TuneConfig(seed=seed, epochs=epochs, batch_size=batch_size, max_seq_length=max_seq_length,
                            learning_rate=learning_rate, hard_negatives=hard_negatives, threads=settings.torch_threads,
                            train_layers=train_layers, mini_batch_size=mini_batch_size,
                            negative_miner=negative_miner)
        # The bar (with its ETA) goes to stderr, so --json keeps stdout clean for the result: a run takes minutes
        result, stats = tune_embedder(settings.models_dir, samples, passages, config, related=related, progress=True)
        if mlflow:
            try:
                result.run_id = log_run(settings, result, stats, data, experiment)
            except (StoreUnavailableError, OSError, Exception) as exc:  # the model is saved; say MLflow failed
                result.mlflow_error = f"MLflow logging failed: {exc}"
        if as_json:
            emit_json(result.to_dict())
            return
        typer.echo(f"tuned embedder {result.version}: {result.pairs} pairs, {stats.steps} steps in "
                   f"{stats.seconds:.0f} s (loss {stats.first_loss:.3f} -> {stats.last_epoch_loss:.3f}), "
                   f"int8 cosine to fp32 >= {result.metrics['int8_cosine_min']:.3f}")
        typer.echo(f"model_path: {result.model_path}")
        typer.echo(f"use it: RAG_EMBEDDING_MODEL_PATH={result.model_path} (the next ingest re-embeds)")
        if result.mlflow_error:
            typer.echo(result.mlflow_error, err=True)

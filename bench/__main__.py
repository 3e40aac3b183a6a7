"""``python -m bench ingest|query|quality|encoder|context|generator|colbert|tuned-embedder|small-to-big``: print
a table, write JSON in .bench/"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import typer

from bench.common import WORK_DIR, BenchError, write_result
from rag.runtime import configure_runtime

WORK_DIR_DEFAULT = WORK_DIR / "scifact-train-dev"
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """Benchmarks for ingestion, queries and retrieval quality (see docs/PERFORMANCE.md)."""
    configure_runtime()


def _run(kind: str, out: Path | None, **options: Any) -> None:
    """Run ``bench.<kind>`` (imported only now: each pulls in heavy libraries), print its table, write its JSON."""
    module = importlib.import_module(f"bench.{kind}")
    try:
        result = module.run(**options)
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    path = write_result(kind, result, out)
    typer.echo(module.render(result))
    typer.echo(f"\nJSON: {path}")


@app.command()
def ingest(
    quick: bool = typer.Option(False, help="A small corpus (first 200 SciFact documents) instead of all 5,183."),
    corpus: Path | None = typer.Option(None, help="A BEIR .jsonl corpus or a directory of documents."),
    limit: int | None = typer.Option(None, min=1, help="Use only the first N documents."),
    steps: str | None = typer.Option(None, help="Comma-separated steps (default: all, see bench/ingest.py)."),
    threads: int = typer.Option(0, min=0, help="torch/ONNX Runtime threads for every step (0 = usable cores)."),
    backend: str = typer.Option("bge-small-int8", help="Our embedder configuration for the rerun/update steps."),
    ingest_batch_chunks: int | None = typer.Option(None, min=1, help="Chunks per store write (RAG default 256)."),
    out: Path | None = typer.Option(None, help="JSON output path (default .bench/ingest-<time>.json)."),
) -> None:
    """This project vs a LangChain pipeline vs the raw encoder: chunks/s, time, CPU, peak RSS, re-ingest."""
    chosen = {"systems": tuple(s.strip() for s in steps.split(","))} if steps else {}  # else bench.ingest's default
    _run(
        "ingest",
        out,
        quick=quick,
        corpus=corpus,
        limit=limit,
        threads=threads,
        backend=backend,
        ingest_batch_chunks=ingest_batch_chunks,
        **chosen,
    )


@app.command()
def encoder(
    quick: bool = typer.Option(False, help="30 documents instead of 120."),
    rounds: int = typer.Option(2, min=1, help="Interleaved rounds per variant (the best is reported)."),
    docs: int | None = typer.Option(None, min=1, help="SciFact documents to chunk (default 120, quick 30)."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Encoder variants (torch/ONNX int8, threads, batch, bucketing, spinning) with the int8 cosine guard."""
    _run("encoder", out, quick=quick, rounds=rounds, n_docs=docs)


@app.command()
def quality(
    quick: bool = typer.Option(False, help="60 train + 60 test queries over a 500-document SciFact subset."),
    dataset: Path | None = typer.Option(None, help="A BEIR folder with qrels/train.tsv and qrels/test.tsv."),
    backends: str = typer.Option(
        "bge-small-int8,onnx-int8",
        help="Embedder configurations to index and compare: bge-small-int8 (default), onnx-int8, torch (MiniLM).",
    ),
    rerank: bool = typer.Option(True, help="Reranker study on the first embedder (grid tuned on train)."),
    train_limit: int | None = typer.Option(None, min=1, help="Train queries for the reranker grid (default all)."),
    test_limit: int | None = typer.Option(None, min=1, help="Test queries the reranker is scored on (default all)."),
    labelled: str = typer.Option(
        "samples/qa/sample_qa.jsonl,../shared/data/pubmedqa",
        help="Labelled sets scored for every configuration (JSONL with reference_doc_ids, PubMedQA folders).",
    ),
    labelled_limit: int | None = typer.Option(None, min=1, help="Questions per labelled set (default all)."),
    work_dir: Path | None = typer.Option(None, help="Where indexes and caches live (default .bench/work)."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """nDCG@10 and recall@100 for dense, BM25, hybrid and reranked, per embedder, beside published figures."""
    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    sets = tuple(Path(p.strip()) for p in labelled.split(",") if p.strip() and Path(p.strip()).exists())
    _run(
        "quality",
        out,
        quick=quick,
        dataset_dir=dataset,
        backends=chosen,
        rerank=rerank,
        train_limit=train_limit or (20 if quick else None),
        test_limit=test_limit,
        labelled=sets,
        labelled_limit=labelled_limit or (20 if quick else None),
        **({"work_root": work_dir} if work_dir else {}),
    )


@app.command()
def query(
    quick: bool = typer.Option(False, help="A small SciFact subset index, short load runs."),
    data_dir: Path | None = typer.Option(None, help="An ingested data directory (default: the SciFact bench index)."),
    backend: str = typer.Option("bge-small-int8", help="Embedder configuration the index was built with."),
    users: str = typer.Option("1,8,32", help="Concurrent locust users, comma-separated."),
    skip_generation: bool = typer.Option(False, help="Only the extractive (retrieval-bound) HTTP runs."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Retrieval latency in process; HTTP throughput and latency under load; streaming time to first token."""
    _run(
        "query",
        out,
        quick=quick,
        data_dir=data_dir,
        backend=backend,
        skip_generation=skip_generation,
        users=tuple(int(u) for u in users.split(",")),
    )


@app.command()
def context(
    quick: bool = typer.Option(False, help="4 questions and 2 budgets."),
    budgets: str = typer.Option("600,1000,1500,2500,4000", help="RAG_CONTEXT_CHARS values, comma-separated."),
    questions: int | None = typer.Option(None, min=1, help="Labelled sample questions (default 32)."),
    backend: str = typer.Option("onnx-int8", help="Embedding backend."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """RAG_CONTEXT_CHARS trade-off with the local model: latency and time to first token vs correctness."""
    _run(
        "context",
        out,
        quick=quick,
        budgets=tuple(int(b) for b in budgets.split(",")),
        n_questions=questions,
        backend=backend,
    )


@app.command()
def generator(
    quick: bool = typer.Option(False, help="SmolLM2-135M, 2 questions, 4 configurations (a smoke test, not speed)."),
    configs: str | None = typer.Option(
        None, help="Comma-separated configurations (see bench/generator.py CANDIDATES; a+b merges; 'default')."
    ),
    questions: int | None = typer.Option(None, min=1, help="Labelled sample questions (default 16, quick 2)."),
    models_dir: Path | None = typer.Option(None, help="Where the bundled GGUFs and requantized variants are cached."),
    backend: str = typer.Option("onnx-int8", help="Embedding backend."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Generator configurations (requantized weights, threads, batches, flash attention, KV type, prompt cache,
    speculative decoding, shorter prompts) vs today's default in one interleaved run: speed ratios and quality."""
    chosen = tuple(c.strip() for c in configs.split(",") if c.strip()) if configs else None
    _run(
        "generator", out, quick=quick, configs=chosen, n_questions=questions, models_dir=models_dir, backend=backend
    )


@app.command()
def colbert(
    quick: bool = typer.Option(False, help="20 test and 40 train queries (the corpus is still encoded in full once)."),
    queries: int | None = typer.Option(None, min=1, help="Score only the first N test queries (default all 300)."),
    train_queries: int | None = typer.Option(None, min=1, help="Tune on the first N train queries (default all)."),
    rerank_n: str = typer.Option("20,50,100", help="Hybrid candidates N to rerank, comma-separated (tuned on train)."),
    weights: str = typer.Option("0.25,0.5,0.75,1.0", help="Blend weights w of ColBERT (1 = rerank), comma-separated."),
    batch_size: int = typer.Option(16, min=1, help="Documents per ONNX call when encoding the corpus."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """ColBERT late interaction (bundled answerai-colbert-small-v1) alone and reranking the hybrid, vs the hybrid."""
    _run(
        "colbert",
        out,
        queries=queries or (20 if quick else None),
        train_queries=train_queries or (40 if quick else None),
        rerank_ns=tuple(int(n) for n in rerank_n.split(",") if n.strip()),
        weights=tuple(float(w) for w in weights.split(",") if w.strip()),
        batch_size=batch_size,
    )


@app.command("tuned-embedder")
def tuned_embedder(
    model: Path | None = typer.Option(None, help="A model folder from `rag tune-embedder` (omit with --split-only)."),
    dev_folder: Path = typer.Option(WORK_DIR_DEFAULT, help="BEIR folder with qrels/train.tsv and qrels/dev.tsv."),
    split_only: bool = typer.Option(False, help="Only write the 80/20 train/dev split of SciFact train and stop."),
    choices_from: Path | None = typer.Option(
        None, help="An earlier result JSON whose dev choices the tuned side reuses (a model that trained on dev)."
    ),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Default vs tuned embedder on SciFact: every choice on held-out train queries, test scored once."""
    from bench import tuned_embedder as study

    if split_only or model is None:
        typer.echo(json.dumps(study.split(dev_folder)))
        typer.echo(f"tune on it: rag tune-embedder --dataset {dev_folder} --split train --json")
        return
    _run("tuned_embedder", out, model=model, dev_folder=dev_folder, choices_from=choices_from)


@app.command("small-to-big")
def small_to_big(
    limit: int | None = typer.Option(None, min=1, help="Only the first N answerable questions of each labelled set."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Would neighbouring chunks' sentences put more labelled evidence in the context? Coverage and its cost."""
    _run("small_to_big", out, limit=limit)


if __name__ == "__main__":
    app()

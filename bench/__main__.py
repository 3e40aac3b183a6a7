"""``python -m bench ingest|query|quality|encoder|context [--quick]``: print a table, write JSON under .bench/."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.common import BenchError, write_result

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """Benchmarks for ingestion, queries and retrieval quality (see docs/PERFORMANCE.md)."""


def _finish(kind: str, result: dict, text: str, out: Path | None) -> None:
    path = write_result(kind, result, out)
    typer.echo(text)
    typer.echo(f"\nJSON: {path}")


@app.command()
def ingest(
    quick: bool = typer.Option(False, help="A small corpus (first 200 SciFact documents) instead of all 5,183."),
    corpus: Path | None = typer.Option(None, help="A BEIR .jsonl corpus or a directory of documents."),
    limit: int | None = typer.Option(None, min=1, help="Use only the first N documents."),
    steps: str | None = typer.Option(None, help="Comma-separated steps (default: all, see bench/ingest.py)."),
    threads: int = typer.Option(0, min=0, help="torch/ONNX Runtime threads for every step (0 = usable cores)."),
    backend: str = typer.Option("onnx-int8", help="Our embedding backend for the rerun/update steps."),
    ingest_batch_chunks: int | None = typer.Option(None, min=1, help="Chunks per store write (RAG default 256)."),
    out: Path | None = typer.Option(None, help="JSON output path (default .bench/ingest-<time>.json)."),
) -> None:
    """This project vs a LangChain pipeline vs the raw encoder: chunks/s, time, CPU, peak RSS, re-ingest."""
    from bench import ingest as bench_ingest

    try:
        result = bench_ingest.run(
            quick=quick,
            corpus=corpus,
            limit=limit,
            systems=tuple(s.strip() for s in steps.split(",")) if steps else bench_ingest.DEFAULT_SYSTEMS,
            threads=threads,
            backend=backend,
            ingest_batch_chunks=ingest_batch_chunks,
        )
    except BenchError as exc:
        raise typer.Exit(_fail(exc)) from exc
    _finish("ingest", result, bench_ingest.render(result), out)


@app.command()
def encoder(
    quick: bool = typer.Option(False, help="30 documents instead of 120."),
    rounds: int = typer.Option(2, min=1, help="Interleaved rounds per variant (the best is reported)."),
    docs: int | None = typer.Option(None, min=1, help="SciFact documents to chunk (default 120, quick 30)."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Encoder variants (torch/ONNX int8, threads, batch, bucketing, spinning) with the int8 cosine guard."""
    from bench import encoder as bench_encoder

    try:
        result = bench_encoder.run(quick=quick, rounds=rounds, n_docs=docs)
    except BenchError as exc:
        raise typer.Exit(_fail(exc)) from exc
    _finish("encoder", result, bench_encoder.render(result), out)


@app.command()
def quality(
    quick: bool = typer.Option(False, help="60 train + 60 test queries over a 500-document SciFact subset."),
    dataset: Path | None = typer.Option(None, help="A BEIR folder with qrels/train.tsv and qrels/test.tsv."),
    backends: str = typer.Option("onnx-int8,torch", help="Encoder backends to index and compare."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """nDCG@10 and recall@100 for dense, BM25, hybrid (default and tuned on train) beside published figures."""
    from bench import quality as bench_quality

    try:
        result = bench_quality.run(
            quick=quick, dataset_dir=dataset, backends=tuple(b.strip() for b in backends.split(",") if b.strip())
        )
    except BenchError as exc:
        raise typer.Exit(_fail(exc)) from exc
    _finish("quality", result, bench_quality.render(result), out)


@app.command()
def query(
    quick: bool = typer.Option(False, help="A small SciFact subset index, short load runs."),
    data_dir: Path | None = typer.Option(None, help="An ingested data directory (default: the SciFact bench index)."),
    backend: str = typer.Option("onnx-int8", help="Embedding backend the index was built with."),
    users: str = typer.Option("1,8,32", help="Concurrent locust users, comma-separated."),
    skip_generation: bool = typer.Option(False, help="Only the extractive (retrieval-bound) HTTP runs."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """Retrieval latency in process; HTTP throughput and latency under load; streaming time to first token."""
    from bench import query as bench_query

    try:
        result = bench_query.run(
            quick=quick,
            data_dir=data_dir,
            backend=backend,
            skip_generation=skip_generation,
            users=tuple(int(u) for u in users.split(",")),
        )
    except BenchError as exc:
        raise typer.Exit(_fail(exc)) from exc
    _finish("query", result, bench_query.render(result), out)


@app.command()
def context(
    quick: bool = typer.Option(False, help="4 questions and 2 budgets."),
    budgets: str = typer.Option("600,1000,1500,2500,4000", help="RAG_CONTEXT_CHARS values, comma-separated."),
    questions: int | None = typer.Option(None, min=1, help="Labelled sample questions (default 32)."),
    backend: str = typer.Option("onnx-int8", help="Embedding backend."),
    out: Path | None = typer.Option(None, help="JSON output path."),
) -> None:
    """RAG_CONTEXT_CHARS trade-off with the local model: latency and time to first token vs correctness."""
    from bench import context as bench_context

    try:
        result = bench_context.run(
            quick=quick,
            budgets=tuple(int(b) for b in budgets.split(",")),
            n_questions=questions,
            backend=backend,
        )
    except BenchError as exc:
        raise typer.Exit(_fail(exc)) from exc
    _finish("context", result, bench_context.render(result), out)


def _fail(exc: BenchError) -> int:
    typer.echo(f"error: {exc}", err=True)
    return 2


if __name__ == "__main__":
    app()

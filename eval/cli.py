"""``rag eval`` and ``rag promote``: registered into the core CLI through the ``rag.commands`` entry point.

Exit statuses of ``rag eval``: 0 done (and the gate passed, if asked); 1 the release gate found a regression;
2 invalid input, configuration, or MLflow unreachable (the results are saved locally first); 3 ``--compare
production`` found no production run for this dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import typer

from rag.console import emit_json, fail, handles_errors, load_settings
from rag.errors import InvalidInputError
from rag.settings import RetrievalMode, Settings

GATE_FAILED_EXIT = 1
NO_BASELINE_EXIT = 3


def register(app: typer.Typer) -> None:
    """Add ``eval`` (and ``eval generate``), ``promote``, ``report``, ``tune-embedder`` and ``calibrate`` to
    the ``rag`` command."""
    eval_app = typer.Typer(help="Evaluate the pipeline on labelled questions; `rag eval generate` writes some.")
    eval_app.callback(invoke_without_command=True)(handles_errors(eval_command))
    eval_app.command("generate")(handles_errors(generate_command))
    app.add_typer(eval_app, name="eval")
    app.command("promote")(handles_errors(promote_command))
    app.command("report")(handles_errors(report_command))  # issue 16: the static dashboard
    from eval.tune import register as register_tune  # `rag tune-embedder` (issue 12)

    register_tune(app)
    from eval.calibrate_cli import register as register_calibrate  # `rag calibrate` (issue 13)

    register_calibrate(app)


def eval_command(
    ctx: typer.Context,
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Our QA .jsonl, a BEIR folder (queries + qrels) or a PubMedQA folder."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score a seeded random subset of N questions."),
    judge: str | None = typer.Option(None, "--judge", help="local, openai or none (default RAG_EVAL_JUDGE)."),
    experiment: str = typer.Option("rag-eval", "--experiment", help="MLflow experiment name."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress bars)."),
    answers: bool | None = typer.Option(
        None, "--answers/--no-answers", help="Generate answers (default: when judged or references exist)."
    ),
    modes: list[str] = typer.Option(
        list(get_args(RetrievalMode)), "--mode", help="Retrieval modes to score (repeat the option)."
    ),
    corpus: Path | None = typer.Option(None, "--corpus", help="Documents to ingest for a JSONL dataset."),
    collection: str | None = typer.Option(None, "--collection", help="Collection (default: eval-<dataset>)."),
    split: str = typer.Option("test", "--split", help="BEIR qrels split."),
    generator: str | None = typer.Option(None, "--generator", help="local, openai or extractive."),
    compare: str | None = typer.Option(
        None, "--compare", help="Release gate: 'production' or a baseline MLflow run id."
    ),
    primary: list[str] = typer.Option([], "--primary", help="Gate metrics (default: the primary set)."),
    max_drop: float | None = typer.Option(
        None, "--max-drop", min=0, help="Largest allowed drop of a gate metric (default RAG_EVAL_GATE_MAX_DROP)."
    ),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the run to MLflow."),
    log_pending: bool = typer.Option(
        False, "--log-pending", help="Log saved runs that did not reach MLflow, then exit."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    from_feedback: bool = typer.Option(
        False, "--from-feedback", help="Write a labelled set from rated answers (needs RAG_LOG_QUESTIONS=text), exit."
    ),
    output: Path | None = typer.Option(None, "--output", help="Where --from-feedback writes its JSONL set."),
) -> None:
    """Evaluate the query pipeline on a labelled dataset: retrieval, answers, RAGAS, slices, MLflow, gate."""
    if ctx.invoked_subcommand is not None:
        return
    from eval.gate import PRIMARY_METRICS
    from eval.runner import EvalOptions
    from eval.workflow import run_eval

    settings = load_settings(generator=generator)
    if log_pending:
        _log_pending(settings, as_json)
        return
    if from_feedback:
        _from_feedback(settings, output, as_json)
        return
    if dataset is None:
        raise InvalidInputError("--dataset is required", hint="e.g. rag eval --dataset samples/qa/sample_qa.jsonl")
    _check_choices(judge, modes)
    options = EvalOptions(
        dataset=dataset,
        limit=limit,
        judge=judge,
        answers=answers,
        modes=modes,
        corpus=corpus,
        collection=collection,
        split=split,
        experiment=experiment,
        log_to_mlflow=mlflow,
        progress=progress and not as_json,
    )
    outcome = run_eval(
        settings, options, compare=compare, primary=primary or PRIMARY_METRICS, max_drop=max_drop
    )
    _finish_eval(outcome, as_json)


def _finish_eval(outcome: Any, as_json: bool) -> None:
    """Print the outcome; exit 2 (MLflow), 3 (no baseline) or 1 (gate failed) as documented."""
    from eval.report import format_gate, format_text
    from eval.workflow import outcome_json

    if as_json:
        emit_json(outcome_json(outcome))
    else:
        typer.echo(format_text(outcome.result))
        if outcome.gate is not None:
            typer.echo("")
            typer.echo(format_gate(outcome.gate.model_dump()))
    if outcome.mlflow_error:
        fail(outcome.mlflow_error)
    if outcome.gate_error:
        fail(outcome.gate_error, NO_BASELINE_EXIT if "no production run" in outcome.gate_error else 2)
    if outcome.gate is not None and not outcome.gate.passed:
        raise typer.Exit(GATE_FAILED_EXIT)

def generate_command(
    output: Path = typer.Option(..., "--output", help="The JSONL test set to write (+ <output>.summary.json)."),
    n: int = typer.Option(50, "--n", min=1, max=5000, help="Questions in the set (answerable + near-miss)."),
    collection: str | None = typer.Option(None, "--collection", help="Collection to use (default RAG_COLLECTION)."),
    near_miss_share: float = typer.Option(
        0.25, "--near-miss-share", min=0.0, max=0.9, help="Share made unanswerable by hiding their source document."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default RAG_SEED)."),
    generator: str | None = typer.Option(None, "--generator", help="local or openai (default RAG_GENERATOR)."),
    min_chunk_words: int = typer.Option(40, "--min-chunk-words", min=5, help="Shorter chunks are not used."),
    max_attempts_factor: float = typer.Option(
        3.0, "--max-attempts-factor", min=1.0, max=50.0, help="Chunks tried at most: N times this."
    ),
    examples: Path | None = typer.Option(
        None, "--examples", help="Real questions (a JSONL test set or one per line) whose style the writer copies."
    ),
    n_examples: int = typer.Option(5, "--n-examples", min=1, max=20, help="How many of --examples the writer sees."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a labelled test set from your own documents with the local (or an OpenAI-compatible) model:
    stratified chunks, a question and short answer each, filtered, plus near-miss unanswerables."""
    from eval.testset import GenerationConfig, QuestionSetGenerator, load_style_examples, write_testset
    from rag.answering.generation.backends import make_backend
    from rag.indexing.embedding import Embedder
    from rag.indexing.manifest import Manifest
    from rag.indexing.store import VectorStore

    settings = load_settings(collection=collection, generator=generator)
    if settings.generator == "extractive":
        raise InvalidInputError(
            "the extractive generator cannot write questions", hint="use --generator local (the default) or openai"
        )
    seed = settings.seed if seed is None else seed
    config = GenerationConfig(
        n=n, near_miss_share=near_miss_share, seed=seed, min_chunk_words=min_chunk_words,
        max_attempts_factor=max_attempts_factor,
        examples=load_style_examples(examples, n_examples, seed) if examples is not None else (),
    )  # fmt: skip
    index_version = None
    if Manifest.path_for(settings.manifest_dir, settings.collection).is_file():
        index_version = Manifest.load(settings.manifest_dir, settings.collection).index_version
    if index_version is None:
        raise InvalidInputError(
            f"collection {settings.collection!r} has no documents yet", hint="run `rag ingest PATH` first"
        )
    chunks = list(VectorStore(settings).iter_chunks())
    say = (lambda _: None) if as_json else typer.echo
    testset = QuestionSetGenerator(
        settings, config, make_backend(settings), Embedder(settings), progress=progress and not as_json, say=say
    )
    result = testset.run(chunks, collection=settings.collection, index_version=index_version)
    summary_path = write_testset(result, output)
    summary = result.summary()
    if as_json:
        emit_json({**summary, "output": str(output), "summary_file": str(summary_path)})
        return
    typer.echo(
        f"wrote {summary['questions']} questions ({summary['answerable']} answerable, {summary['near_miss']} "
        f"near-miss) from {summary['documents']} documents to {output} in {summary['seconds']:.0f}s; "
        f"{summary['attempts']} chunks tried, rejected: {summary['rejected'] or 'none'}"
    )
    typer.echo(f"evaluate with: rag eval --dataset {output} --collection {settings.collection}")


def promote_command(
    run_id: str = typer.Argument(..., help="MLflow run id of a `rag eval` run."),
    force: bool = typer.Option(False, "--force", help="Promote even if the run failed the release gate."),
    as_json: bool = typer.Option(False, "--json", help="Print the new baseline as JSON."),
) -> None:
    """Make an evaluation run's pipeline config the production baseline (MLflow tags + production.json)."""
    from eval.tracking import promote
    from rag.answering.production import production_path

    settings = load_settings()
    baseline = promote(settings, run_id, force=force)
    if as_json:
        emit_json(baseline.model_dump(mode="json"))
        return
    typer.echo(
        f"PROMOTED run {baseline.run_id}: config {baseline.config_version} is production "
        f"(dataset {baseline.dataset_name}, index {baseline.index_version})"
    )
    if baseline.previous:
        typer.echo(f"replaced config {baseline.previous['config_version']} (run {baseline.previous['run_id']})")
    typer.echo(f"baseline written to {production_path(settings)}")


def report_command(
    output: Path | None = typer.Option(None, "--output", help="HTML file (default data_dir/reports/dashboard.html)."),
) -> None:
    """Write one static HTML dashboard: eval runs vs production, slices, calibration, drift and feedback."""
    from eval.dashboard import write_dashboard

    typer.echo(str(write_dashboard(load_settings(), output)))


def _from_feedback(settings: Settings, output: Path | None, as_json: bool) -> None:
    from eval.feedback import dataset_from_feedback

    summary = dataset_from_feedback(settings, output)
    if as_json:
        emit_json(summary.to_dict())
        return
    typer.echo(
        f"wrote {summary.samples} labelled questions from {summary.rated} rated answers to {summary.output} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(summary.by_label.items()))}); "
        f"evaluate with: rag eval --dataset {summary.output}"
    )


def _log_pending(settings: Settings, as_json: bool) -> None:
    """``rag eval --log-pending``: log saved runs that did not reach MLflow; exit 2 if some still cannot."""
    from eval.tracking import log_pending as log_pending_runs

    outcomes = log_pending_runs(settings)
    if as_json:
        emit_json(outcomes)
    else:
        for item in outcomes:
            typer.echo(f"{item['run_dir']}: " + (f"logged as {item['run_id']}" if "run_id" in item
                                                 else f"still pending ({item['error']})"))
        if not outcomes:
            typer.echo("no pending runs")
    if any("error" in item for item in outcomes):
        raise typer.Exit(2)


def _check_choices(judge: str | None, modes: list[str]) -> None:
    if judge is not None and judge not in ("local", "openai", "none"):
        raise InvalidInputError(f"unknown --judge {judge!r}", hint="use local, openai or none")
    unknown_modes = sorted(set(modes) - set(get_args(RetrievalMode)))
    if unknown_modes or not modes:
        raise InvalidInputError(f"unknown --mode {unknown_modes}", hint="use dense, bm25 and/or hybrid")

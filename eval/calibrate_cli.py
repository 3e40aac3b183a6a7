"""``rag calibrate``: registered into the core CLI by eval/cli.py (the ``rag.commands`` entry point ``eval``)."""

from __future__ import annotations

from pathlib import Path

import typer

from rag.console import emit_json, fail, handles_errors, load_settings


def register(app: typer.Typer) -> None:
    app.command("calibrate")(handles_errors(calibrate_command))


def calibrate_command(
    datasets: list[Path] = typer.Option(
        ..., "--dataset", help="Labelled questions: our QA .jsonl, a BEIR folder or PubMedQA (repeat the option)."
    ),
    corpus: Path | None = typer.Option(None, "--corpus", help="Documents a JSONL dataset asks about."),
    corpus_for: list[str] = typer.Option(
        [], "--corpus-for", help="NAME=PATH: the documents of one JSONL dataset (its file stem), overriding --corpus."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Seeded questions per dataset (default: all of a JSONL set, 100 otherwise)."
    ),
    limit_for: list[str] = typer.Option(
        [], "--limit-for", help="NAME=N: questions of one dataset (e.g. pubmedqa=90), overriding --limit."
    ),
    near_miss_share: float = typer.Option(
        0.5, "--near-miss-share", min=0, max=1, help="Share made unanswerable by removing their gold documents."
    ),
    distractors: int = typer.Option(300, "--distractors", min=0, help="BEIR: non-gold documents kept."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cached pipeline results (default: data dir)."),
    collect_only: bool = typer.Option(False, "--collect-only", help="Run and cache the questions; fit nothing."),
    cached_only: bool = typer.Option(
        False, "--cached-only", help="Fit on the questions already in the cache; run no new ones."
    ),
    generator: str | None = typer.Option(None, "--generator", help="local, openai or extractive."),
    experiment: str = typer.Option("rag-calibrate", "--experiment", help="MLflow experiment name."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the run to MLflow."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fit the calibrated confidence and its abstention threshold on labelled questions; report on a test split."""
    from eval.calibrate import RATE_KEYS, CalibrateOptions, _fmt_rate, run_calibration
    from eval.calibration_data import BuildOptions

    settings = load_settings(generator=generator)
    options = CalibrateOptions(
        datasets=datasets,
        build=BuildOptions(limit=limit, limits=_parse_limits(limit_for), near_miss_share=near_miss_share,
                           distractors=distractors, seed=settings.seed, corpus=corpus,
                           corpora=_parse_corpora(corpus_for)),
        cache_dir=cache_dir,
        collect_only=collect_only,
        cached_only=cached_only,
        experiment=experiment,
        log_to_mlflow=mlflow,
    )
    # with --json, stdout holds only the JSON: progress goes to stderr (a collection runs for tens of minutes)
    run = run_calibration(settings, options, echo=lambda line: typer.echo(line, err=as_json))
    if run is None:
        if as_json:
            emit_json({"collected": True})
        return
    test = run.summary["test"]
    if as_json:
        emit_json({
            "version": run.artifact["version"],
            "artifact": str(run.artifact_path),
            "report": str(run.report_path),
            "mlflow_run_id": run.mlflow_run_id,
            "kind": run.artifact["kind"],
            "data_hash": run.artifact["data"]["hash"],
            "test": {k: test[k] for k in ("brier", "ece", "brier_uncalibrated", "ece_uncalibrated", "n_questions",
                                          "n_candidates", "generator_ceiling", "at_target")},
        })
    else:
        typer.echo(f"model {run.artifact['version']} ({run.artifact['kind']}); test Brier {test['brier']:.3f}, "
                   f"ECE {test['ece']:.3f} (uncalibrated heuristic: {test['brier_uncalibrated']:.3f}, "
                   f"{test['ece_uncalibrated']:.3f})")
        for item in test["at_target"]:
            typer.echo(f"target {item['target_error_rate']:<5} threshold {item['threshold']:.3f}  "
                       + "  ".join(f"{k}={_fmt_rate(item[k])}" for k in RATE_KEYS))
        typer.echo(f"generator ceiling (answerable questions the model answered right before any check): "
                   f"{_fmt_rate(test['generator_ceiling'])}")
        typer.echo(f"artifact: {run.artifact_path}\nreport:   {run.report_path}")
        typer.echo(f"make it the packaged default: cp {run.artifact_path} rag/answering/calibration_default.json "
                   f"(or set RAG_CALIBRATION_PATH={run.artifact_path})")
    if run.mlflow_error:
        fail(run.mlflow_error)


def _parse_limits(items: list[str]) -> tuple[tuple[str, int], ...]:
    from rag.errors import InvalidInputError

    out = []
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise InvalidInputError(f"--limit-for {item!r} is not NAME=N", hint="e.g. --limit-for pubmedqa=90")
        out.append((name, int(value)))
    return tuple(out)


def _parse_corpora(items: list[str]) -> tuple[tuple[str, Path], ...]:
    from rag.errors import InvalidInputError

    out = []
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            raise InvalidInputError(
                f"--corpus-for {item!r} is not NAME=PATH",
                hint="e.g. --corpus-for calibration_qa=samples/calibration/corpus",
            )
        out.append((name, Path(value)))
    return tuple(out)

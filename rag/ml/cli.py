"""``rag train``, ``rag promote-model`` and ``rag drift``: registered through the ``rag.commands`` entry point.

Exit statuses: 0 success / no drift; 1 promotion refused; 2 invalid input or configuration (from
``handles_errors``); 3 drift detected (after the report is written and ``--on-drift`` has run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rag.console import emit_json, handles_errors, load_settings
from rag.errors import InvalidInputError

DRIFT_EXIT = 3
REFUSED_EXIT = 1


def _print_metrics(result: Any) -> None:
    typer.echo(f"{'metric':<12} {'validation (OOF)':<28} test (held out)")
    for name in result.metrics["test"]:
        cells = []
        for split in ("validation", "test"):
            m = result.metrics[split][name]
            cells.append(f"{m.value:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}]")
        typer.echo(f"{name:<12} {cells[0]:<28} {cells[1]}")


def _print_drift(report: Any, paths: dict[str, Path]) -> None:
    verdict = "DRIFT DETECTED" if report.drift else "no drift"
    typer.echo(f"{verdict} ({report.kind}); drifted features: {', '.join(report.drifted_features) or 'none'}")
    typer.echo(
        f"Bonferroni: family of {report.bonferroni_m} tests, per-test alpha {report.corrected_alpha:.3g}; "
        f"thresholds {report.thresholds}"
    )
    typer.echo(f"{'feature':<26} {'test':<18} {'statistic':>10} {'p-value':>10} {'threshold':>10}  drift")
    for r in report.results:
        stat = "-" if r.statistic is None else f"{r.statistic:.4g}"
        p = "-" if r.p_value is None else f"{r.p_value:.3g}"
        limit = "-" if r.threshold is None else f"{r.threshold:.3g}"
        flag = "YES" if r.drift else ("skipped" if r.skipped else "no")
        typer.echo(f"{r.feature:<26} {r.test:<18} {stat:>10} {p:>10} {limit:>10}  {flag}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for kind, path in paths.items():
        typer.echo(f"{kind} report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``promote-model`` and ``drift`` to the ``rag`` command."""
    app.command("train")(handles_errors(train))
    app.command("promote-model")(handles_errors(promote_model_command))
    app.command("drift")(handles_errors(drift))


def train(
    data: Path = typer.Option(..., "--data", help="CSV with a header row."),
    target: str = typer.Option(..., "--target", help="Binary target column."),
    model: str = typer.Option("rf", "--model", help="rf | gbm | logreg"),
    sensitive: list[str] = typer.Option(
        [], "--sensitive", help="Slice the test metrics by this column (default: sex, age, gender... if present)."
    ),
    drop: list[str] = typer.Option([], "--drop", help="Do not use this column as a feature."),
    seed: int = typer.Option(42, "--seed", help="Seed for the split, CV folds, models and bootstrap."),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment name."),
    name: str | None = typer.Option(None, "--name", help="Registered model name (default <csv>-<target>)."),
    test_size: float = typer.Option(0.2, "--test-size", help="Held-out share."),
    cv_folds: int = typer.Option(5, "--cv-folds"),
    n_resamples: int = typer.Option(1000, "--n-resamples", help="Bootstrap resamples for CIs."),
    min_slice_size: int = typer.Option(30, "--min-slice-size"),
    positive_label: str | None = typer.Option(None, "--positive-label"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a binary classifier: split first, CV search, test once, slices, MLflow run + staging alias."""
    from rag.ml.training import TrainingConfig, train_tabular

    if model not in {"rf", "gbm", "logreg"}:
        raise InvalidInputError(f"unknown --model {model!r}", hint="use rf, gbm or logreg")
    settings = load_settings()
    config = TrainingConfig(
        data=data,
        target=target,
        model=model,
        sensitive=list(sensitive) or None,
        drop=list(drop),
        seed=seed,
        experiment=experiment,
        registered_name=name,
        test_size=test_size,
        cv_folds=cv_folds,
        n_resamples=n_resamples,
        min_slice_size=min_slice_size,
        positive_label=positive_label,
    )
    result = train_tabular(settings, config)
    if as_json:
        emit_json(result.to_dict())
        return
    from rag.ml.slices import format_slice_table

    auc = result.metrics["test"]["roc_auc"]
    typer.echo(
        f"{result.model_name} v{result.model_version} ({result.alias}) run {result.run_id} in {result.elapsed_s}s"
    )
    typer.echo(f"test ROC-AUC {auc.value:.4f} [95% CI {auc.ci_low:.4f}, {auc.ci_high:.4f}]")
    _print_metrics(result)
    if result.slices:
        import pandas as pd

        typer.echo(format_slice_table(pd.DataFrame([s.model_dump() for s in result.slices])))
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


def promote_model_command(
    name: str = typer.Argument(..., help="Registered model name."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="Allowed ROC-AUC drop versus production."),
    holdout: Path | None = typer.Option(None, "--holdout", help="Held-out CSV (default: staging's test rows)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compare only; move no alias."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Move staging to production if it is not worse than production on the same held-out rows (exit 1 if so)."""
    from rag.ml.promotion import promote_model

    decision = promote_model(load_settings(), name, tolerance=tolerance, holdout=holdout, dry_run=dry_run)
    if as_json:
        emit_json(decision.to_dict())
    else:
        action = "PROMOTED" if decision.promoted else "NOT PROMOTED"
        typer.echo(f"{action}: {decision.reason}")
        typer.echo(f"held-out rows: {decision.heldout_rows} from {decision.heldout_source}")
        for warning in decision.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if decision.outcome == "refused":
        raise typer.Exit(REFUSED_EXIT)


def drift(
    reference: Path | None = typer.Option(
        None, "--reference", help="Reference CSV, or a query log (.jsonl; default: the API's query log)."
    ),
    current: Path | None = typer.Option(None, "--current", help="Current CSV or query log (.jsonl)."),
    window_by: str = typer.Option("count", "--window-by", help="One query log: count | time windows."),
    reference_size: int = typer.Option(500, "--reference-size", help="Count windows: reference records."),
    current_size: int = typer.Option(200, "--current-size", help="Count windows: latest records."),
    reference_window: str | None = typer.Option(None, "--reference-window", help="Time window START/END."),
    current_window: str | None = typer.Option(None, "--current-window", help="Time window START/END."),
    tests: str | None = typer.Option(None, "--tests", help="CSV: comma list of ks,chi2,psi,wasserstein."),
    exclude: list[str] = typer.Option([], "--exclude", help="CSV: column not to compare (e.g. the target)."),
    categorical: list[str] = typer.Option([], "--categorical", help="CSV: treat this column as categorical."),
    numeric: list[str] = typer.Option([], "--numeric", help="CSV: treat this column as numeric."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise alpha (Bonferroni across p-value tests)."),
    psi_threshold: float = typer.Option(0.2, "--psi-threshold"),
    wasserstein_threshold: float = typer.Option(0.2, "--wasserstein-threshold", help="In reference stds."),
    min_auc: float = typer.Option(0.55, "--min-auc", help="Query log: domain-classifier AUC needed."),
    pca_fit: str = typer.Option("pooled", "--pca-fit", help="Query log: fit the PCA on pooled | reference."),
    seed: int = typer.Option(0, "--seed"),
    report_dir: Path | None = typer.Option(None, "--report-dir", help="Default: <data_dir>/drift."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write the HTML report with plots."),
    on_drift: str | None = typer.Option(
        None, "--on-drift", help="Command to run on drift; gets RAG_DRIFT_REPORT (JSON path) in its env."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare reference and current data (two CSVs, or windows of the query log); exit 3 on drift."""
    from rag.ml.drift_report import drift_dir, record_trigger, run_trigger, write_report

    settings = load_settings()
    thresholds = {"psi": psi_threshold, "wasserstein": wasserstein_threshold}
    ref_path = reference or settings.query_log_path
    suffixes = {ref_path.suffix.lower(), *([current.suffix.lower()] if current else [])}
    if suffixes <= {".jsonl"}:
        from rag.ml.query_drift import query_log_drift

        if window_by not in {"count", "time"}:
            raise InvalidInputError(f"--window-by must be count or time, got {window_by!r}")
        if pca_fit not in {"pooled", "reference"}:
            raise InvalidInputError(f"--pca-fit must be pooled or reference, got {pca_fit!r}")
        report = query_log_drift(
            ref_path,
            current,
            window_by=window_by,  # type: ignore[arg-type]
            reference_size=reference_size,
            current_size=current_size,
            reference_window=reference_window,
            current_window=current_window,
            alpha=alpha,
            thresholds=thresholds,
            min_auc=min_auc,
            pca_fit=pca_fit,  # type: ignore[arg-type]
            seed=seed,
        )
    elif suffixes <= {".csv"}:
        kinds: dict[str, Any] = {c: "categorical" for c in categorical} | {c: "numeric" for c in numeric}
        chosen = [t.strip() for t in tests.split(",") if t.strip()] if tests else None
        report = _tabular_drift(ref_path, current, kinds, chosen, exclude=exclude, alpha=alpha, thresholds=thresholds)
    else:
        raise InvalidInputError(
            f"cannot compare {sorted(suffixes)} files", hint="give two .csv files or .jsonl query logs"
        )
    paths = write_report(report, report_dir or drift_dir(settings), html_report=html)
    if report.drift and on_drift:
        trigger = run_trigger(on_drift, paths, report)
        report = record_trigger(report, paths, trigger)
        if trigger.get("returncode") != 0:
            typer.echo(f"warning: --on-drift command failed: {trigger}", err=True)
    if as_json:
        emit_json({**report.summary(), "report": {k: str(v) for k, v in paths.items()}, "trigger": report.trigger})
    else:
        _print_drift(report, paths)
    if report.drift:
        raise typer.Exit(DRIFT_EXIT)


def _tabular_drift(
    reference: Path,
    current: Path | None,
    kinds: dict[str, Any],
    tests: list[str] | None,
    *,
    exclude: list[str],
    alpha: float,
    thresholds: dict[str, float],
) -> Any:
    """``rag drift`` on two CSV files: per-column tests, each file identified by its sha256."""
    if current is None:
        raise InvalidInputError("tabular drift needs --current CSV next to --reference CSV")
    from rag.hashing import file_sha256
    from rag.ml.drift import compare_frames
    from rag.ml.training import load_table

    return compare_frames(
        load_table(reference),
        load_table(current),
        exclude=exclude,
        column_kinds=kinds,
        tests=tests,
        alpha=alpha,
        thresholds=thresholds,
        reference_info={"source": str(reference), "sha256": file_sha256(reference)},
        current_info={"source": str(current), "sha256": file_sha256(current)},
    )

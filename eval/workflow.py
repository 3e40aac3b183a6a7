"""One evaluation end to end: run → save locally → HTML report → MLflow → release gate (optional).

``run_eval`` never loses a finished evaluation: the run folder is written before MLflow is contacted; when
MLflow fails, ``EvalOutcome.mlflow_error`` says so and ``rag eval --log-pending`` logs the folder later.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from eval.gate import PRIMARY_METRICS, GateResult, paired_metric_differences
from eval.report import render_html
from eval.runner import EvalOptions, EvalResult, EvalRunner
from eval.tracking import (
    GATE,
    GATE_TAG,
    REPORT,
    SAMPLES_CSV,
    find_production_run,
    get_run,
    load_samples,
    log_run,
    mark_pending,
    save_local,
    tag_run,
    write_summary,
)
from rag.answering.generation.backends import LLMBackend
from rag.errors import NotFoundError, RagError
from rag.indexing.embedding import Embedder
from rag.settings import Settings


@dataclass
class EvalOutcome:
    result: EvalResult
    frame: pd.DataFrame
    slices: pd.DataFrame
    run_dir: Path
    mlflow_error: str | None = None
    gate: GateResult | None = None
    gate_error: str | None = None


def run_config(settings: Settings, options: EvalOptions, result: EvalResult) -> dict[str, Any]:
    """Everything needed to reproduce the run: pipeline config, eval options, full settings, dataset."""
    return {
        "pipeline": result.pipeline_config,
        "config_version": result.config_version,
        "eval": options.model_dump(mode="json") | {"judge": options.judge or settings.eval_judge},
        "settings": settings.to_dict(),
        "dataset": result.dataset,
        "index_version": result.index_version,
        "judge": result.judge,
    }


def run_eval(
    settings: Settings,
    options: EvalOptions,
    *,
    compare: str | None = None,
    primary: Sequence[str] = PRIMARY_METRICS,
    max_drop: float | None = None,
    embedder: Embedder | None = None,
    generator_backend: LLMBackend | None = None,
    judge_backend: LLMBackend | None = None,
) -> EvalOutcome:
    runner = EvalRunner(
        settings, options, embedder=embedder, generator_backend=generator_backend, judge_backend=judge_backend
    )
    result, frame, slices = runner.run()
    run_dir = save_local(settings, result, frame, slices, run_config(settings, options, result))
    (run_dir / REPORT).write_text(render_html(result, frame, slices), "utf-8")
    outcome = EvalOutcome(result=result, frame=frame, slices=slices, run_dir=run_dir)
    if not options.log_to_mlflow:
        mark_pending(run_dir, options.experiment, "not logged: --no-mlflow")
        if compare:
            outcome.gate_error = "the release gate needs MLflow (the production run lives there): drop --no-mlflow"
        return outcome
    try:
        log_run(settings, run_dir, options.experiment)
    except RagError as exc:
        mark_pending(run_dir, options.experiment, str(exc))
        outcome.mlflow_error = (
            f"{exc}. Nothing is lost: the results are saved in {run_dir}; "
            "log them later with `rag eval --log-pending`"
        )
        return outcome
    outcome.result = result = _reload(run_dir)
    if compare:
        try:
            outcome.gate = gate(
                settings, result, run_dir, compare, primary=primary,
                max_drop=settings.eval_gate_max_drop if max_drop is None else max_drop,
            )
        except NotFoundError as exc:
            outcome.gate_error = str(exc)
    return outcome


def _reload(run_dir: Path) -> EvalResult:
    from eval.tracking import read_summary

    return read_summary(run_dir)


def gate(
    settings: Settings,
    result: EvalResult,
    run_dir: Path,
    target: str,
    *,
    primary: Sequence[str] = PRIMARY_METRICS,
    max_drop: float = 0.05,
) -> GateResult:
    """Compare a logged run with production (or a given run id); record the verdict on the run."""
    dataset_hash = result.dataset["sha256"]
    if target == "production":
        baseline = find_production_run(settings, dataset_hash)
        if baseline is None:
            raise NotFoundError(
                f"no production run for dataset {result.dataset['name']} (sha256 {dataset_hash[:12]})",
                hint=f"promote a run of this dataset first: rag promote {result.mlflow_run_id}",
            )
    else:
        baseline = get_run(settings, target)
    baseline_id = baseline.info.run_id
    warnings: list[str] = []
    if baseline.data.tags.get("rag_dataset_hash") != dataset_hash:
        warnings.append("the baseline run scored a different dataset file: only questions with equal ids count")
    current = pd.read_csv(run_dir / SAMPLES_CSV)
    previous = load_samples(settings, baseline_id)
    comparisons, paired, more = paired_metric_differences(
        current,
        previous,
        metrics=primary,
        max_drop=max_drop,
        n_resamples=settings.eval_bootstrap_resamples,
        seed=settings.seed,
    )
    from rag.answering.production import read_production

    production = read_production(settings)
    baseline_config = baseline.data.tags.get("rag_config_version")
    if target == "production" and production and production.config_version != baseline_config:
        warnings.append(
            f"production.json promotes config {production.config_version}, but this dataset's production run "
            f"used {baseline_config}: re-evaluate the promoted config on this dataset"
        )
    verdict = GateResult(
        passed=not any(c.regressed for c in comparisons),
        baseline_run_id=baseline_id,
        baseline_config_version=baseline_config,
        current_config_version=result.config_version,
        dataset_hash=dataset_hash,
        paired_questions=paired,
        max_drop=max_drop,
        comparisons=comparisons,
        warnings=warnings + more,
    )
    (run_dir / GATE).write_text(verdict.model_dump_json(indent=2), encoding="utf-8")
    result.gate = verdict.model_dump(mode="json")
    write_summary(run_dir, result)
    if result.mlflow_run_id:
        tag_run(
            settings,
            result.mlflow_run_id,
            {GATE_TAG: "pass" if verdict.passed else "fail", "rag_gate_baseline": baseline_id},
            artifact=run_dir / GATE,
        )
        _log_gate_metrics(settings, result.mlflow_run_id, verdict)
    return verdict


def _log_gate_metrics(settings: Settings, run_id: str, verdict: GateResult) -> None:
    from rag.ml.registry import client_for

    client = client_for(settings)
    for c in verdict.comparisons:
        for field, value in (("difference", c.difference), ("ci_low", c.ci_low), ("ci_high", c.ci_high)):
            if value is not None and math.isfinite(value):
                client.log_metric(run_id, f"gate/{c.metric}/{field}", float(value))
        client.log_metric(run_id, f"gate/{c.metric}/regressed", 1.0 if c.regressed else 0.0)


def outcome_json(outcome: EvalOutcome) -> dict[str, Any]:
    data = json.loads(outcome.result.model_dump_json())
    data["mlflow_error"] = outcome.mlflow_error
    data["gate_error"] = outcome.gate_error
    return data

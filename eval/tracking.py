"""Saving an evaluation run: locally first (nothing is lost), then one MLflow run; promotion to production.

Local layout, ``data_dir/eval/runs/<run name>/``: ``summary.json`` (the ``EvalResult``), ``samples.csv`` and
``samples.jsonl`` (one row per question), ``slices.csv``, ``config.json`` (pipeline config, options, settings),
``report.html``, and ``PENDING_MLFLOW.json`` while the run is not yet in MLflow. Every MLflow write reads
from that folder, so ``rag eval --log-pending`` logs a saved run exactly as the original call would have.

Production baseline: MLflow run tags (a pipeline configuration is not a model, so no registry alias):
``rag_stage=production`` on the promoted run (per dataset hash), ``rag_stage=archived`` on the one it
replaced; ``data_dir/production.json`` (``rag.answering.production``) tells the serving side which config is promoted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from eval.runner import EvalResult, dumps_cell, runs_dir
from rag.answering.production import ProductionBaseline, read_production, write_production
from rag.errors import InvalidInputError, NotFoundError, RagError, StoreUnavailableError
from rag.ml.registry import client_for, download_run_artifact, ensure_experiment
from rag.ml.slices import OVERALL
from rag.settings import Settings

PENDING = "PENDING_MLFLOW.json"
SUMMARY = "summary.json"
SAMPLES_CSV = "samples.csv"
SAMPLES_JSONL = "samples.jsonl"
SLICES_CSV = "slices.csv"
CONFIG = "config.json"
REPORT = "report.html"
GATE = "gate.json"
KIND_TAG, KIND = "rag_kind", "eval"
STAGE_TAG, PRODUCTION, ARCHIVED = "rag_stage", "production", "archived"
DATASET_TAG = "rag_dataset_hash"
GATE_TAG = "rag_gate"


def _env_defaults() -> None:
    """An unreachable server must fail in seconds, not after MLflow's default minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


# ---------------------------------------------------------------------------------------------- local


def save_local(
    settings: Settings, result: EvalResult, frame: pd.DataFrame, slices: pd.DataFrame, config: dict[str, Any]
) -> Path:
    """Write the run folder (marked pending until MLflow has it)."""
    run_dir = runs_dir(settings) / result.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    result.local_dir = str(run_dir.resolve())
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    with (run_dir / SAMPLES_JSONL).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    flat = frame.drop(columns=[c for c in ("contexts",) if c in frame.columns]).apply(
        lambda column: column.map(dumps_cell)
    )
    flat.to_csv(run_dir / SAMPLES_CSV, index=False)
    slices.to_csv(run_dir / SLICES_CSV, index=False)
    (run_dir / CONFIG).write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    (run_dir / PENDING).write_text(json.dumps({"reason": "not logged yet"}), encoding="utf-8")
    write_summary(run_dir, result)
    return run_dir


def write_summary(run_dir: Path, result: EvalResult) -> None:
    (run_dir / SUMMARY).write_text(result.model_dump_json(indent=2), encoding="utf-8")


def read_summary(run_dir: Path) -> EvalResult:
    try:
        return EvalResult.model_validate_json((run_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{run_dir} is not a saved evaluation run: {exc}") from exc


def mark_pending(run_dir: Path, experiment: str, error: str) -> None:
    (run_dir / PENDING).write_text(
        json.dumps({"experiment": experiment, "error": error, "at": datetime.now(UTC).isoformat()}, indent=2),
        encoding="utf-8",
    )


def pending_runs(settings: Settings) -> list[Path]:
    root = runs_dir(settings)
    return sorted(p.parent for p in root.glob(f"*/{PENDING}")) if root.is_dir() else []


# ---------------------------------------------------------------------------------------------- MLflow


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts: allowed characters only, no empty or dot-only path segments."""
    cleaned = []
    for part in parts:
        text = re.sub(r"[^\w.\- :]", "_", str(part)).strip() or "_"
        cleaned.append("_" if set(text) <= {"."} else text)
    return "/".join(cleaned)[:250]


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        text = json.dumps(value, default=str) if isinstance(value, list) else str(value)
        out[prefix[:250]] = text[:6000]


def run_params(result: EvalResult, config: dict[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    _flatten("pipeline", result.pipeline_config, params)
    _flatten("dataset", result.dataset, params)
    _flatten("judge", result.judge or {"judge_id": "none"}, params)
    params.update(
        {
            "index_version": str(result.index_version),
            "config_version": result.config_version,
            "collection": result.collection,
            "generator": result.generator_id,
            "seed": str(result.seed),
            "answers_generated": str(result.answers_generated),
            "primary_mode": result.primary_mode,
            "modes": ",".join(result.modes),
            "retrieval_depth": str(result.retrieval_depth),
        }
    )
    _flatten("eval", config.get("eval", {}), params)
    return params


def run_metrics(result: EvalResult, slices: pd.DataFrame) -> dict[str, float]:
    metrics: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            metrics[key] = float(value)

    for name, summary in result.metrics.items():
        put(metric_key(name), summary.value)
        put(metric_key(name, "ci_low"), summary.ci_low)
        put(metric_key(name, "ci_high"), summary.ci_high)
        put(metric_key(name, "n"), summary.n)
        put(metric_key(name, "n_missing"), summary.n_missing)
    for mode, values in result.by_mode.items():
        for name, summary in values.items():
            put(metric_key("mode", mode, name), summary.value)
            put(metric_key("mode", mode, name, "ci_low"), summary.ci_low)
            put(metric_key("mode", mode, name, "ci_high"), summary.ci_high)
    if not slices.empty:
        rows = slices.loc[(slices["slice_column"] != OVERALL) & slices["value"].notna()]
        for row in rows.itertuples(index=False):
            base = ("slice", row.slice_column, row.slice_value, row.metric)
            put(metric_key(*base), row.value)
            put(metric_key(*base, "ci_low"), row.ci_low)
            put(metric_key(*base, "ci_high"), row.ci_high)
            put(metric_key(*base, "n"), row.n)
            put(metric_key(*base, "flagged"), 1.0 if row.flagged else 0.0)
    for name, usage in result.judge_usage.items():
        for field in ("failure_rate", "errors", "nan", "ok", "cached", "attempted", "calls"):
            put(metric_key("judge", name, field), usage.get(field))
    for name, cost in result.cost.items():
        for field in ("seconds", "prompt_tokens", "completion_tokens", "calls"):
            put(metric_key("cost", name, field), cost.get(field))
    for name, value in result.timings.items():
        put(metric_key("time", name), value)
    put("pipeline_errors", result.pipeline_errors)
    put("flagged_slices", len(result.flagged_slices))
    return metrics


def run_tags(result: EvalResult) -> dict[str, str]:
    return {
        "mlflow.runName": result.run_name,
        "mlflow.source.name": "rag eval",
        "git_commit": result.git_commit or "unknown",
        KIND_TAG: KIND,
        "rag_dataset": result.dataset["name"],
        DATASET_TAG: result.dataset["sha256"],
        "rag_config_version": result.config_version,
        "rag_index_version": str(result.index_version),
        "rag_generator": result.generator_id,
        "rag_judge": (result.judge or {}).get("judge_id", "none"),
        "rag_local_dir": result.local_dir,
    }


def log_run(settings: Settings, run_dir: Path, experiment: str) -> str:
    """Log a saved run folder as one MLflow run; clears the pending marker. Returns the run id."""
    from mlflow.entities import Metric, Param, RunTag

    _env_defaults()
    result = read_summary(run_dir)
    config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    slices = pd.read_csv(run_dir / SLICES_CSV) if (run_dir / SLICES_CSV).stat().st_size > 1 else pd.DataFrame()
    try:
        client = client_for(settings)
        experiment_id = ensure_experiment(client, settings, experiment)
        run = client.create_run(experiment_id, run_name=result.run_name, tags=run_tags(result))
    except RagError:
        raise
    except Exception as exc:
        raise StoreUnavailableError(f"MLflow at {settings.tracking_uri} is not reachable: {exc}") from exc
    run_id = run.info.run_id
    try:
        result.mlflow_run_id = run_id
        result.mlflow_experiment_id = experiment_id
        result.tracking_uri = settings.tracking_uri
        write_summary(run_dir, result)
        params = [Param(k, v) for k, v in sorted(run_params(result, config).items())]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        metrics = [Metric(k, v, stamp, 0) for k, v in sorted(run_metrics(result, slices).items())]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run_id, tags=[RunTag("rag_local_dir", result.local_dir)])
        for name in (SUMMARY, SAMPLES_CSV, SAMPLES_JSONL, SLICES_CSV, CONFIG, REPORT, GATE):
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        with contextlib.suppress(Exception):  # a server gone away keeps the run RUNNING; the local copy is whole
            client.set_terminated(run_id, "FAILED")
        raise StoreUnavailableError(f"logging to MLflow at {settings.tracking_uri} failed: {exc}") from exc
    (run_dir / PENDING).unlink(missing_ok=True)
    (run_dir / "mlflow.json").write_text(
        json.dumps({"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": settings.tracking_uri}),
        encoding="utf-8",
    )
    return run_id


def log_pending(settings: Settings) -> list[dict[str, Any]]:
    """Log every saved run that is still pending; returns one outcome per run (run id or error)."""
    outcomes = []
    for run_dir in pending_runs(settings):
        marker = json.loads((run_dir / PENDING).read_text(encoding="utf-8") or "{}")
        experiment = marker.get("experiment") or "rag-eval"
        try:
            outcomes.append({"run_dir": str(run_dir), "run_id": log_run(settings, run_dir, experiment)})
        except RagError as exc:
            mark_pending(run_dir, experiment, str(exc))
            outcomes.append({"run_dir": str(run_dir), "error": str(exc)})
    return outcomes


def tag_run(settings: Settings, run_id: str, tags: dict[str, str], artifact: Path | None = None) -> None:
    _env_defaults()
    client = client_for(settings)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if artifact is not None and artifact.is_file():
        client.log_artifact(run_id, str(artifact))


# ---------------------------------------------------------------------------------------------- production


def _eval_experiment_ids(client: Any) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def find_production_run(settings: Settings, dataset_hash: str) -> Any | None:
    """The production evaluation run for a dataset (by its hash), or None."""
    _env_defaults()
    client = client_for(settings)
    try:
        runs = client.search_runs(
            _eval_experiment_ids(client),
            filter_string=f"tags.{STAGE_TAG} = '{PRODUCTION}' and tags.{DATASET_TAG} = '{dataset_hash}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except Exception as exc:
        raise StoreUnavailableError(f"MLflow at {settings.tracking_uri} did not answer: {exc}") from exc
    return runs[0] if runs else None


def get_run(settings: Settings, run_id: str) -> Any:
    _env_defaults()
    client = client_for(settings)
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise NotFoundError(f"MLflow run {run_id} does not exist at {settings.tracking_uri}") from exc
        raise StoreUnavailableError(f"MLflow at {settings.tracking_uri} did not answer: {exc}") from exc


def load_samples(settings: Settings, run_id: str) -> pd.DataFrame:
    """A logged run's per-sample table."""
    return pd.read_csv(download_run_artifact(settings, run_id, SAMPLES_CSV))


def promote(settings: Settings, run_id: str, *, force: bool = False) -> ProductionBaseline:
    """Make an evaluation run's pipeline config the production baseline (tags + ``production.json``)."""
    run = get_run(settings, run_id)
    tags = run.data.tags
    if tags.get(KIND_TAG) != KIND:
        raise InvalidInputError(f"run {run_id} is not a `rag eval` run", hint="promote the run id `rag eval` printed")
    if run.info.status != "FINISHED":
        raise InvalidInputError(f"run {run_id} is {run.info.status}, not FINISHED: only complete runs are promoted")
    if tags.get(GATE_TAG) == "fail" and not force:
        raise InvalidInputError(
            f"run {run_id} failed the release gate against production",
            hint="fix the regression, or pass --force to promote anyway (recorded on the run)",
        )
    config = json.loads(download_run_artifact(settings, run_id, CONFIG).read_text(encoding="utf-8"))
    summary = json.loads(download_run_artifact(settings, run_id, SUMMARY).read_text(encoding="utf-8"))
    client = client_for(settings)
    dataset_hash = tags.get(DATASET_TAG, "")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    previous_run = find_production_run(settings, dataset_hash)
    if previous_run is not None and previous_run.info.run_id != run_id:
        client.set_tag(previous_run.info.run_id, STAGE_TAG, ARCHIVED)
        client.set_tag(previous_run.info.run_id, "rag_demoted_by", run_id)
        client.set_tag(previous_run.info.run_id, "rag_demoted_at", now)
    client.set_tag(run_id, STAGE_TAG, PRODUCTION)
    client.set_tag(run_id, "rag_promoted_at", now)
    if force and tags.get(GATE_TAG) == "fail":
        client.set_tag(run_id, "rag_promoted_despite_gate", "true")
    previous = read_production(settings)
    headline = {
        name: float(value)
        for name, value in run.data.metrics.items()
        if "/" not in name and math.isfinite(float(value))
    }
    baseline = ProductionBaseline(
        config_version=tags.get("rag_config_version", summary.get("config_version", "")),
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        tracking_uri=settings.tracking_uri,
        dataset_name=tags.get("rag_dataset", ""),
        dataset_hash=dataset_hash,
        index_version=tags.get("rag_index_version"),
        generator=tags.get("rag_generator"),
        promoted_at=now,
        metrics=headline,
        pipeline_config=config.get("pipeline", {}),
        previous=(
            {k: getattr(previous, k) for k in ("config_version", "run_id", "dataset_name", "promoted_at")}
            if previous
            else None
        ),
    )
    write_production(settings, baseline)
    return baseline

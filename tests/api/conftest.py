from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import Services, create_app
from ingest.pipeline import IngestionPipeline
from rag.answering.generation.answerer import make_answerer
from rag.answering.generation.backends import LocalBackend
from rag.indexing.embedding import Embedder
from rag.settings import Settings
from tests.conftest import SAMPLES, rag_serve

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The bundled sample corpus, ingested once for every API test."""
    data_dir = tmp_path_factory.mktemp("api-data")
    summary = IngestionPipeline(Settings(data_dir=data_dir), embedder=embedder, progress=False).run(
        [SAMPLES / "corpus"]
    )
    assert summary.documents_added == 10 and not summary.documents_failed
    return data_dir


@pytest.fixture
def make_client(sample_data_dir: Path, embedder: Embedder, smollm: LocalBackend) -> Iterator[Callable[..., TestClient]]:
    """A real app (real index, encoder and generator) behind Starlette's HTTP test client."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        overrides.setdefault("data_dir", sample_data_dir)
        overrides.setdefault("generator", "extractive")
        overrides.setdefault("api_keys", [API_KEY])
        settings = Settings(**overrides)
        backend = smollm if settings.generator == "local" else None
        answerer = make_answerer(settings, backend=backend)
        services = Services(settings, embedder=embedder, answerer=answerer)
        client = TestClient(create_app(settings, services=services))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(sample_data_dir: Path) -> Iterator[str]:
    """`rag serve` as a user starts it: a real uvicorn process on a free loopback port."""
    with rag_serve(sample_data_dir) as url:
        yield url

"""Fixtures for the reliability tests: the sample corpus plus the poisoned notice, ingested once; the API under
fuzz and load as a real `rag serve` process; an in-process app for the quick HTTP checks.

The scenarios themselves live in ``bench/reliability.py`` (the documented suite command); these tests run them
with small bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import Services, create_app
from bench.reliability import (
    Service,
    api_service,
    ingest,
    suite_server_settings,
    write_sample_corpus,
)
from rag.answering.generation.answerer import make_answerer
from rag.indexing.embedding import Embedder
from rag.settings import Settings

ADMIN_KEY = "reliability-admin-key-0123"


@pytest.fixture(scope="session")
def served_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/corpus with samples/poisoned/notice.md added as ``poisoned/notice.md``."""
    return write_sample_corpus(tmp_path_factory.mktemp("rel-corpus") / "corpus")


@pytest.fixture(scope="session")
def served_data_dir(tmp_path_factory: pytest.TempPathFactory, served_corpus: Path, embedder: Embedder) -> Path:
    data_dir = tmp_path_factory.mktemp("rel-data")
    summary = ingest(data_dir, [served_corpus], embedder=embedder)
    assert summary.documents_added == 11 and not summary.documents_failed, summary
    return data_dir


@pytest.fixture(scope="session")
def suite_api(served_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API as the suite fuzzes and loads it: SmolLM2 as local model, 1 generation slot, 3 queued."""
    service = api_service(served_data_dir, tmp_path_factory.mktemp("rel-logs"), **suite_server_settings())
    service.start()
    try:
        service.wait_ready(240)
        yield service
    finally:
        service.stop()


@pytest.fixture
def app_client(served_data_dir: Path, embedder: Embedder) -> Iterator[Callable[..., TestClient]]:
    """A real app in-process (real index and encoder, extractive answers) behind Starlette's test client."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        overrides.setdefault("data_dir", served_data_dir)
        overrides.setdefault("generator", "extractive")
        overrides.setdefault("api_keys", [ADMIN_KEY])
        settings = Settings(**overrides)
        answerer = make_answerer(settings, embed=embedder.embed)
        client = TestClient(create_app(settings, services=Services(settings, embedder=embedder, answerer=answerer)))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)

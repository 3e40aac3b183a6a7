"""Faults that need no server topology: ingestion concurrent with queries (in process, real index), and an API
started while its Chroma server is still down.

SIGKILL during ingestion is tested in tests/ingest/test_cli.py (``bench/reliability.py`` runs that test);
the Chroma server outage is in test_rel_topology.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from bench.reliability import QUESTION, chroma_service, concurrent_ingestion, free_port
from rag.indexing.embedding import Embedder

Client = Callable[..., TestClient]


def test_queries_during_ingestion_see_one_published_version(tmp_path: Path, embedder: Embedder) -> None:
    """No query fails while an ingestion edits, adds and prunes documents, and every answer uses only chunks
    of the index version it reports (the BM25 snapshot's version; see rag/answering/retrieval.py)."""
    outcome = concurrent_ingestion(tmp_path, embedder=embedder)
    print(f"\n{outcome.line()}")
    assert outcome.ok, outcome.detail


def test_api_starts_while_chroma_is_down_and_recovers_when_it_comes_up(app_client: Client, tmp_path: Path) -> None:
    """The API must start (and answer 503 store_unavailable) before its Chroma server does; chromadb's HttpClient
    refuses to be constructed without a server, so the app makes it on first use and again after a failure."""
    port = free_port()
    client = app_client(chroma_url=f"http://127.0.0.1:{port}")
    down = client.post("/v1/query", json={"question": QUESTION})
    assert down.status_code == 503 and down.json()["code"] == "store_unavailable", down.text
    assert down.headers["Retry-After"] and f"127.0.0.1:{port}" in down.json()["detail"]
    assert client.get("/readyz").status_code == 503
    chroma = chroma_service(tmp_path / "chroma", tmp_path / "logs", port=port).start()
    try:
        chroma.wait_ready(90)
        up = client.post("/v1/query", json={"question": QUESTION})
        assert up.status_code == 200, up.text  # an empty server: the answer abstains, but the service works
    finally:
        chroma.stop()

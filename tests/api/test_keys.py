"""Scoped API keys made with `rag keys`: roles, collection isolation through every route that reads documents,
revocation, and hashed storage."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.pipeline import IngestionPipeline
from rag.cli import app as cli
from rag.indexing.embedding import Embedder
from rag.settings import Settings
from tests.api.conftest import API_KEY
from tests.api.test_documents import GLASSWING, ZORBULITE

Client = Callable[..., TestClient]


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """`documents` holds the zorbulite note, `bravo` the glasswing note."""
    root = tmp_path_factory.mktemp("keys")
    for collection, name, text in (("documents", "zorbulite.md", ZORBULITE), ("bravo", "glasswing.md", GLASSWING)):
        source = root / "sources" / collection
        source.mkdir(parents=True)
        (source / name).write_bytes(text)
        settings = Settings(data_dir=root / "data", collection=collection)
        IngestionPipeline(settings, embedder=embedder, progress=False).run([source])
    return root / "data"


def rag_keys(data_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["keys", *args], env={"RAG_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    return result.output


def create(data_dir: Path, *args: str) -> dict:
    return json.loads(rag_keys(data_dir, "create", *args))


def test_a_key_for_one_collection_never_reads_another(make_client: Client, two_collections: Path) -> None:
    reader = create(two_collections, "--name", "team-a", "--role", "query", "-c", "documents")
    client = make_client(data_dir=two_collections, require_key_for_query=True)
    a = {"Authorization": f"Bearer {reader['secret']}"}

    def status(method: str, url: str, **kwargs: object) -> int:
        return client.request(method, url, headers=a, **kwargs).status_code  # type: ignore[arg-type]

    own = client.post("/v1/query", json={"question": "Who first described zorbulite?"}, headers=a).json()
    assert {c["doc_id"] for c in own["citations"]} == {"zorbulite.md"}
    other = {"question": "Who named the glasswing moth?", "collection": "bravo"}
    assert status("POST", "/v1/query", json=other) == 403
    assert client.post("/v1/query", json=other, headers=a).json()["code"] == "forbidden"
    assert status("POST", "/v1/query/stream", json=other) == 403
    assert status("POST", "/v1/chat", json=other) == 403
    assert status("POST", "/v1/chat/stream", json=other) == 403
    completion = {"model": "ragkit-bravo", "messages": [{"role": "user", "content": other["question"]}]}
    refused = client.post("/v1/chat/completions", json=completion, headers=a)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert status("GET", "/v1/models/ragkit-bravo") == 403
    assert [m["id"] for m in client.get("/v1/models", headers=a).json()["data"]] == ["ragkit-documents"]
    assert status("GET", "/v1/info") == 200
    # a query-role key is refused by every admin route
    for method, url in (("GET", "/v1/collections"), ("GET", "/v1/collections/documents/documents"),
                        ("POST", "/v1/ingest"), ("DELETE", "/v1/documents/0123456789abcdef/a.md")):  # fmt: skip
        assert status(method, url, json={"paths": ["x"]} if method == "POST" else None) == 403, url
    assert client.post("/v1/documents", files=[("files", ("a.md", ZORBULITE))], headers=a).status_code == 403
    # the RAG_API_KEYS key still reads everything
    admin = {"X-API-Key": API_KEY}
    assert client.post("/v1/query", json=other, headers=admin).json()["citations"][0]["doc_id"] == "glasswing.md"

    rag_keys(two_collections, "revoke", reader["id"])
    assert status("POST", "/v1/query", json={"question": "Who first described zorbulite?"}) == 401


def test_a_scoped_admin_key_manages_only_its_collections(make_client: Client, two_collections: Path) -> None:
    manager = create(two_collections, "--name", "ops-a", "--role", "admin", "-c", "documents")
    client = make_client(data_dir=two_collections, require_key_for_query=True)
    a = {"X-API-Key": manager["secret"]}
    assert [c["name"] for c in client.get("/v1/collections", headers=a).json()] == ["documents"]
    assert client.get("/v1/collections/documents/documents", headers=a).status_code == 200
    assert client.get("/v1/collections/bravo/documents", headers=a).status_code == 403
    upload = client.post("/v1/documents?collection=bravo", files=[("files", ("a.md", ZORBULITE))], headers=a)
    assert upload.status_code == 403
    assert client.delete("/v1/documents/0123456789abcdef/a.md?collection=bravo", headers=a).status_code == 403
    assert client.post("/v1/ingest", json={"paths": ["x"], "collection": "bravo"}, headers=a).status_code == 403
    # a job in another collection is not visible either
    job = client.post(
        "/v1/documents?collection=bravo", files=[("files", ("extra.md", GLASSWING))], headers={"X-API-Key": API_KEY}
    ).json()
    client.app.state.services.jobs.wait(120)  # type: ignore[attr-defined]
    assert client.get(job["status_url"], headers=a).status_code == 403
    assert client.get(job["status_url"], headers={"X-API-Key": API_KEY}).json()["state"] == "succeeded"


def test_keys_are_stored_hashed_and_listed_without_secrets(tmp_path: Path) -> None:
    made = create(tmp_path, "--name", "team-b", "-c", "bravo", "-c", "documents")
    assert made["role"] == "query" and made["collections"] == ["bravo", "documents"]
    with sqlite3.connect(tmp_path / "keys.sqlite") as db:
        stored = " ".join(str(v) for row in db.execute("SELECT * FROM keys") for v in row)
    assert made["secret"] not in stored
    listed = [json.loads(line) for line in rag_keys(tmp_path, "list").splitlines()]
    assert [k["id"] for k in listed] == [made["id"]] and "secret" not in listed[0]
    failed = CliRunner().invoke(cli, ["keys", "revoke", "nope"], env={"RAG_DATA_DIR": str(tmp_path)})
    assert failed.exit_code == 1

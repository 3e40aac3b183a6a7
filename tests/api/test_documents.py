"""Documents over HTTP: upload → query → delete → query through the job queue, listings, and refused uploads."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.conftest import API_KEY

Client = Callable[..., TestClient]
KEY = {"X-API-Key": API_KEY}
ZORBULITE = (
    b"# Zorbulite\n\nZorbulite is a blue mineral that was first described by the geologist Amelia Quint in 1931. "
    b"She found the first crystals of zorbulite in the Vesper Caves of northern Norway.\n"
)
GLASSWING = (
    b"# Glasswing moths\n\nThe glasswing moth Vitrella clara has wings as clear as window glass. "
    b"Entomologist Tomas Brenner named the species in 1898 after specimens from Lake Ohrid.\n"
)


def wait_for(client: TestClient, job_url: str) -> dict:
    for _ in range(600):
        job = client.get(job_url, headers=KEY).json()
        if job["state"] in {"succeeded", "failed"}:
            assert job["state"] == "succeeded", job
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_url} did not finish")


def ask(client: TestClient, question: str) -> dict:
    response = client.post("/v1/query", json={"question": question})
    assert response.status_code == 200, response.text
    return response.json()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_upload_query_delete_query_round_trip(make_client: Client, tmp_path: Path) -> None:
    client = make_client(data_dir=tmp_path / "data")
    files = [
        ("files", ("zorbulite.md", ZORBULITE, "text/markdown")),
        ("files", ("moths.zip", zipped({"notes/glasswing.md": GLASSWING}), "application/zip")),
    ]
    accepted = client.post("/v1/documents", files=files, headers=KEY)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    zorbulite_id = next(d["doc_id"] for d in body["documents"] if d["name"] == "zorbulite.md")
    assert zorbulite_id.endswith("/zorbulite.md") and len(body["documents"]) == 2
    wait_for(client, body["status_url"])
    stored = list((tmp_path / "data" / "uploads" / "documents").glob("*/*.md"))
    assert sorted(p.name for p in stored) == ["glasswing.md", "zorbulite.md"]

    listing = client.get("/v1/collections/documents/documents", headers=KEY).json()
    assert {d["doc_id"]: d["status"] for d in listing["documents"]}[zorbulite_id] == "indexed"
    version_before = listing["index_version"]
    assert version_before and all(d["chunks"] >= 1 for d in listing["documents"])
    collections = client.get("/v1/collections", headers=KEY).json()
    assert [(c["name"], c["documents"]) for c in collections] == [("documents", 2)]

    answer = ask(client, "Who first described the mineral zorbulite?")
    assert not answer["abstained"] and "Amelia Quint" in answer["answer"]
    assert answer["citations"][0]["doc_id"] == zorbulite_id

    deleted = client.delete(f"/v1/documents/{zorbulite_id}", headers=KEY)
    assert deleted.status_code == 202, deleted.text
    job = wait_for(client, deleted.json()["status_url"])
    assert job["summary"]["documents_deleted"] == 1
    listing = client.get("/v1/collections/documents/documents", headers=KEY).json()
    assert [d["doc_id"] for d in listing["documents"]] == [d["doc_id"] for d in body["documents"][1:]]
    assert listing["index_version"] != version_before

    after = ask(client, "Who first described the mineral zorbulite?")
    assert all(c["doc_id"] != zorbulite_id for c in after["citations"])
    assert "Amelia Quint" not in after["answer"]
    assert not ask(client, "Who named the glasswing moth species?")["abstained"]
    assert client.delete(f"/v1/documents/{zorbulite_id}", headers=KEY).status_code == 404


def test_unsafe_and_oversized_uploads_are_refused(make_client: Client, tmp_path: Path) -> None:
    client = make_client(data_dir=tmp_path / "data", upload_max_files=2)

    def upload(*files: tuple[str, bytes]) -> tuple[int, str]:
        response = client.post("/v1/documents", files=[("files", f) for f in files], headers=KEY)
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, response.json()["code"]

    assert upload(("../../etc/evil.md", ZORBULITE)) == (422, "invalid_input")
    assert upload(("program.exe", b"MZ\x90\x00")) == (422, "invalid_input")
    assert upload(("slip.zip", zipped({"../../outside.md": ZORBULITE}))) == (422, "invalid_input")
    assert upload(("bomb.zip", zipped({"zeros.md": b"0" * 5_000_000}))) == (413, "payload_too_large")
    assert upload(("a.md", ZORBULITE), ("b.md", GLASSWING), ("c.md", b"# c\n\nthird")) == (413, "payload_too_large")
    assert not (tmp_path / "data" / "uploads").exists() or not any((tmp_path / "data" / "uploads").rglob("*.md"))
    assert client.post("/v1/documents", files=[("files", ("a.md", ZORBULITE))]).status_code == 401
    assert client.get("/v1/collections/documents/documents", headers=KEY).json()["code"] == "not_found"
    assert client.delete("/v1/documents/0123456789abcdef/a.md", headers=KEY).status_code == 404

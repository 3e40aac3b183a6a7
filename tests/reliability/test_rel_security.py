"""Secrets never reach logs, auth on every write and admin route (table-driven from OpenAPI), and ingestion
paths confined to the configured roots (traversal, symlinks, loops, absurd names)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.guards import key_fingerprint
from api.observability import JsonFormatter
from rag.indexing.manifest import Manifest
from tests.reliability.conftest import ADMIN_KEY

Client = Callable[..., TestClient]

OPENAI_KEY = "sk-test-SECRET-openai-4f9d2c"
QUERY_KEY = "query-SECRET-key-7b1e"
WRONG_KEY = "wrong-SECRET-key-0a3c"
SECRETS = (OPENAI_KEY, QUERY_KEY, ADMIN_KEY, WRONG_KEY)


class FakeOpenAI(ThreadingHTTPServer):
    """A loopback server speaking OpenAI's chat-completions protocol (SSE); model ``echo-auth`` answers 500
    with the request's Authorization header in the body, as a misbehaving proxy might."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("model") == "echo-auth":
            data = json.dumps({"error": {"message": f"bad upstream ({self.headers.get('Authorization')})"}}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta in ("The Fresnel lens ", "[1]."):
            chunk = {"model": body["model"], "choices": [{"index": 0, "delta": {"content": delta}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"model": body["model"], "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged while the test runs: the API's JSON logger and, at DEBUG, every other logger."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    api_logger, root = logging.getLogger("rag.api"), logging.getLogger()
    old_root_level = root.level
    api_logger.addHandler(handler)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    api_logger.removeHandler(handler)
    root.removeHandler(handler)
    root.setLevel(old_root_level)


def test_keys_and_secrets_never_reach_logs_or_responses(
    app_client: Client, fake_openai: FakeOpenAI, captured_logs: io.StringIO, tmp_path: Path
) -> None:
    common = {
        "generator": "openai",
        "openai_base_url": fake_openai.base_url,
        "openai_api_key": OPENAI_KEY,
        "api_keys": [ADMIN_KEY, QUERY_KEY],
        "require_key_for_query": True,
        "log_questions": "text",
        "ingest_roots": [tmp_path],
    }
    client = app_client(openai_model="served-model", **common)
    failing = app_client(openai_model="echo-auth", **common)
    question = {"question": "What kind of lens did Fresnel present for lighthouses?"}
    bearer = {"Authorization": f"Bearer {QUERY_KEY}"}
    responses = [
        client.post("/v1/query", json=question, headers=bearer),
        client.post("/v1/query/stream", json=question, headers={"X-API-Key": QUERY_KEY}),
        client.post("/v1/query", json=question, headers={"X-API-Key": WRONG_KEY}),
        client.post("/v1/ingest", json={"paths": ["missing"]}, headers={"X-API-Key": ADMIN_KEY}),
        client.get("/v1/jobs/" + "0" * 32, headers={"Authorization": f"Bearer {WRONG_KEY}"}),
        client.get("/v1/info", headers=bearer),
        client.get("/metrics"),
        failing.post("/v1/query", json=question, headers=bearer),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 401, 200, 200, 502]
    assert "The Fresnel lens" in responses[0].json()["answer"]
    assert responses[-1].json()["code"] == "model_error" and "***" in responses[-1].json()["detail"]

    logs = captured_logs.getvalue()
    query_log = client.app.state.services.settings.query_log_path.read_text()  # type: ignore[attr-defined]
    assert f"key:{key_fingerprint(QUERY_KEY)}" in logs, "the request log was not captured"
    assert "Fresnel" in query_log, "the query log was not written"
    for secret in SECRETS:
        for where, text in [("logs", logs), ("query log", query_log)] + [(r.url.path, r.text) for r in responses]:
            assert secret not in text, f"{secret!r} leaked into {where}"


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = client.get("/openapi.json").json()
    return [
        (method.upper(), path.replace("{job_id}", "0" * 32), operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


BAD_CREDENTIALS = [
    {},
    {"X-API-Key": ""},
    {"X-API-Key": "nope"},
    {"X-API-Key": ADMIN_KEY.upper()},
    {"X-API-Key": ADMIN_KEY[:-1]},
    {"X-API-Key": ADMIN_KEY + "x"},
    {"Authorization": "Bearer nope"},
    {"Authorization": f"Basic {ADMIN_KEY}"},
    {"Authorization": ADMIN_KEY},
]


# Routes that answer questions (or rate answers) with query access: a key only when RAG_REQUIRE_KEY_FOR_QUERY is set.
QUERY_ACCESS_TAGS = {"query", "chat", "openai", "feedback"}


def test_every_write_or_admin_route_declares_and_enforces_a_key(app_client: Client) -> None:
    """Table-driven from the app's OpenAPI: any route that is not a read (GET) and not a query-access route, and
    every admin route, declares a security scheme and refuses every bad credential with 401."""
    client = app_client()
    checked = []
    for method, path, operation in _operations(client):
        tags = operation.get("tags", [])
        if QUERY_ACCESS_TAGS & set(tags) or (method == "GET" and "admin" not in tags):
            continue
        assert operation.get("security"), f"{method} {path} declares no security scheme"
        body = {"paths": ["x"]} if method == "POST" else None
        for headers in BAD_CREDENTIALS:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
        accepted = client.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY})
        assert accepted.status_code != 401, (method, path)
        checked.append((method, path))
    assert len(checked) >= 2


def test_query_routes_need_a_key_when_configured(app_client: Client) -> None:
    client = app_client(require_key_for_query=True)
    query_routes = [(m, p) for m, p, op in _operations(client) if "query" in op.get("tags", [])]
    assert {p for _, p in query_routes} >= {"/v1/query", "/v1/query/stream", "/v1/info"}
    for method, path in query_routes:
        body = {"question": "What is coral?"} if method == "POST" else None
        for headers in BAD_CREDENTIALS:
            assert client.request(method, path, json=body, headers=headers).status_code == 401, (path, headers)
        assert client.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    # the other query-access routes (chat, OpenAI-compatible, feedback) refuse bad credentials the same way
    others = [(m, p) for m, p, op in _operations(client) if QUERY_ACCESS_TAGS & set(op.get("tags", [])) - {"query"}]
    assert {p for _, p in others} >= {"/v1/chat", "/v1/chat/completions", "/v1/feedback"}
    for method, path in others:
        body = {"question": "What is coral?"} if method == "POST" else None
        for headers in BAD_CREDENTIALS:
            assert client.request(method, path, json=body, headers=headers).status_code == 401, (path, headers)
        assert client.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY}).status_code != 401


def test_ingestion_paths_stay_inside_the_roots(app_client: Client, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "docs" / "nested").mkdir(parents=True)
    (root / "docs" / "kites.md").write_text("# Kites\n\nThe first kites were flown in China.")
    (root / "docs" / "nested" / "note.md").write_text("# Note\n\nA nested note.")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe vault code is 1234.")
    sibling = tmp_path / "allowed-evil"  # shares the root's name as a string prefix
    sibling.mkdir()
    (sibling / "x.md").write_text("# X\n\nx")
    (root / "docs" / "file-link.md").symlink_to(outside / "secret.md")
    (root / "dir-link").symlink_to(outside)
    (root / "inside-link").symlink_to(root / "docs" / "nested")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    client = app_client(ingest_roots=[root], data_dir=tmp_path / "data")
    headers = {"X-API-Key": ADMIN_KEY}

    def status(path: str) -> tuple[int, str]:
        response = client.post("/v1/ingest", json={"paths": [path]}, headers=headers)
        return response.status_code, response.json().get("code", "")

    refused = {
        "../secret": 403, str(outside): 403, "docs/../../secret/secret.md": 403, "../allowed-evil": 403,
        str(sibling / "x.md"): 403, "docs/file-link.md": 403, "dir-link": 403, "dir-link/secret.md": 403,
        "/etc/passwd": 403, "//etc": 403, "/proc/self/root/etc": 403, "loop-a": 422, "x" * 4000: 422,
        "docs/" + "a/" * 2100: 422, "docs\x00/kites.md": 422, "~": 404, "docs/missing.md": 404, "": 422,
    }  # fmt: skip
    for path, expected in refused.items():
        assert status(path)[0] == expected, (path[:80], status(path))
    assert status("..")[1] == "forbidden_path"
    too_many = client.post("/v1/ingest", json={"paths": ["docs"] * 101}, headers=headers)
    assert too_many.status_code == 422
    accepted = client.post("/v1/ingest", json={"paths": ["docs", "inside-link"]}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 120
    while (job := client.get(accepted.json()["status_url"], headers=headers).json())["state"] in {"queued", "running"}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "succeeded", job
    assert any("file-link.md" in ignored for ignored in job["summary"]["files_ignored"])
    manifest = Manifest.load(tmp_path / "data" / "manifests", "documents")
    # kites.md and nested/note.md from docs, note.md through the link that stays inside the root
    assert set(manifest.documents) == {"kites.md", "nested/note.md", "note.md"}

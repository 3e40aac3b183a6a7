"""Fixtures for the generation tests: the tiny SmolLM2 model, a small fictional corpus, and a real loopback
HTTP server speaking the OpenAI chat-completions protocol (JSON and SSE) for the remote backend."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rag.answering.generation.backends import LocalBackend, smollm2_path
from rag.answering.generation.prompt import Context

CHUNKS = {
    "c-config": (
        "Configuring Quillstream",
        "The configuration file uses TOML. The listen_port setting chooses the HTTP port and defaults to 7420. "
        "The workers setting controls how many ingestion workers run in parallel; the default is 3 and the "
        "maximum is 32. Set log_level to debug, info or warn.",
    ),
    "c-backup": (
        "Backups",
        "Quillstream writes a snapshot of its index every 6 hours into the snapshots directory. Snapshots older "
        "than 14 days are deleted automatically. To restore, stop the service and run quill restore followed by "
        "the snapshot name.",
    ),
    "c-history": (
        "Project history",
        "Quillstream was started in 2019 by Mara Ivanova at the Tallinn data lab. It became open source in 2021 "
        "under the Apache 2.0 license. The mascot is a heron named Quill.",
    ),
}


def make_contexts(*chunk_ids: str) -> list[Context]:
    """Contexts in retrieval order, as the pipeline builds them."""
    return [
        Context(i, cid, f"doc-{cid}", CHUNKS[cid][0], f"{cid}.md", CHUNKS[cid][1], round(1.0 - 0.1 * i, 2))
        for i, cid in enumerate(chunk_ids, start=1)
    ]


@pytest.fixture(scope="session")
def smol() -> LocalBackend:
    """SmolLM2-135M, loaded once: fast enough to test the plumbing, not the answer quality."""
    backend = LocalBackend(smollm2_path(), threads=2, context=2048, max_tokens=32)
    backend.load()
    return backend


class FakeOpenAI(ThreadingHTTPServer):
    """The behaviour is chosen by the request's ``model``: ``ok``, ``fail-500``, ``hang``, ``sse-error``."""

    daemon_threads = True
    reply = "The default port is 7420 [1]."

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"headers": dict(self.headers), "body": body})
        model = body.get("model")
        if model == "fail-500":  # echoes the credentials, as a badly behaved proxy might
            self._json(500, {"error": {"message": f"upstream exploded ({self.headers.get('Authorization')})"}})
            return
        if model == "hang":
            self.server.release.wait(30)
            return
        text = json.dumps({"answer": "7420", "source": 1}) if "response_format" in body else self.server.reply
        usage = {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51}
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else f" {word}"
            self._event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            if model == "sse-error" and i == 1:
                self._event({"error": {"message": "model crashed mid-stream"}})
                return
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self._event({**base, "choices": [], "usage": usage})
        self._event("[DONE]")


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def contexts_for() -> Any:
    """``contexts_for("c-config", "c-backup")``: the corpus chunks as retrieval would hand them over."""
    return make_contexts

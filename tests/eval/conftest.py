"""Fixtures for the evaluation tests: tiny datasets in every supported format, a real OpenAI-protocol judge
server on loopback (scripted verdicts, malformed output, time-outs, flaky errors) and a real ``mlflow server``."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VENV_BIN, free_port, serving

DOCS = {
    "d1": ("Lighthouse lenses", "Fresnel lenses let lighthouses project light far out to sea with thin glass rings."),
    "d2": ("Honeybee dances", "Honeybees perform a waggle dance to tell their hive where flowers with nectar are."),
    "d3": ("Volcano types", "Shield volcanoes have gentle slopes built from runny basalt lava flows."),
    "d4": ("Coral bleaching", "Corals bleach when warm water makes them expel the algae living in their tissue."),
    "d5": ("Printing press", "Gutenberg's printing press used movable metal type cast from a lead alloy."),
    "d6": ("Water cycle", "Evaporation lifts water vapour from oceans; it condenses into clouds and falls as rain."),
}
QUERIES = {
    "q1": "How do lighthouses send light far out to sea?",
    "q2": "Why do honeybees dance in the hive?",
    "q3": "What lava builds shield volcanoes?",
    "q4": "Why do corals bleach in warm water?",
    "q5": "What was Gutenberg's movable type made of?",
    "q9": "A query without judgements is not evaluated.",
}
QRELS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 2), ("q3", "d6", 1), ("q4", "d4", 1), ("q5", "d5", 1)]


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beir") / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as handle:
        for doc_id, (title, text) in DOCS.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as handle:
        for qid, text in QUERIES.items():
            handle.write(json.dumps({"_id": qid, "text": text, "metadata": {"leak": "d1"}}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


PUBMED = {
    "101": ("Does regular exercise lower resting blood pressure?", "yes",
            ["Adults with hypertension exercised for twelve weeks.", "Resting systolic pressure fell by 8 mmHg."],
            "Regular exercise lowered resting blood pressure."),
    "102": ("Is coffee intake linked to higher fracture risk?", "no",
            ["A cohort of 30,000 women reported coffee intake.", "Fracture rates did not differ by intake."],
            "Coffee intake was not associated with fractures."),
    "103": ("Does vitamin D improve mood in winter?", "maybe",
            ["Participants took vitamin D in winter.", "Mood scores changed little and results were mixed."],
            "The effect of vitamin D on winter mood remains unclear."),
}


@pytest.fixture(scope="session")
def tiny_pubmedqa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pubmedqa") / "pubmedqa"
    root.mkdir()
    records = {
        pmid: {
            "QUESTION": question,
            "CONTEXTS": contexts,
            "LABELS": ["METHODS", "RESULTS"],
            "MESHES": [],
            "YEAR": "2001",
            "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes",
            "final_decision": decision,
            "LONG_ANSWER": long_answer,
        }
        for pmid, (question, decision, contexts, long_answer) in PUBMED.items()
    }
    (root / "pqal_test_set.json").write_text(json.dumps(records, indent=1))
    (root / "test_ground_truth.json").write_text(json.dumps({p: v[1] for p, v in PUBMED.items()}))
    return root


@pytest.fixture(scope="session")
def tiny_qa(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Our JSONL format, a full corpus folder, and a corpus missing two relevant documents (a worse index)."""
    root = tmp_path_factory.mktemp("qa")
    full, partial = root / "corpus_full", root / "corpus_partial"
    full.mkdir()
    partial.mkdir()
    for doc_id, (title, text) in DOCS.items():
        (full / f"{doc_id}.txt").write_text(f"{title}\n\n{text}\n")
        if doc_id not in {"d1", "d2"}:
            (partial / f"{doc_id}.txt").write_text(f"{title}\n\n{text}\n")
    rows = [
        {"id": qid, "question": QUERIES[qid], "reference": DOCS[d][1], "reference_doc_ids": [f"{d}.txt"],
         "answerable": True, "tags": {"topic": "science" if qid in {"q2", "q3", "q4"} else "other"}}
        for qid, d in (("q1", "d1"), ("q2", "d2"), ("q3", "d3"), ("q4", "d4"), ("q5", "d5"))
    ]
    rows.append({"id": "u1", "question": "Who won the 2018 football world cup?", "reference": "",
                 "reference_doc_ids": [], "answerable": False, "tags": {"topic": "sports"}})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, full, partial


# ------------------------------------------------------------------------------------------ judge server


class JudgeServer:
    """An OpenAI ``/v1/chat/completions`` server whose behaviour is chosen by markers in the prompt:
    MALFORMED → text that is not JSON; SLOW → answers after ``slow_s`` (past the client's time-out);
    FLAKY → HTTP 500 on the first request carrying the marker, valid afterwards; TRUNCATE → finish_reason
    "length"; EMPTY → no statements (faithfulness is then undetermined, NaN); otherwise a valid verdict
    for the JSON schema sent in ``response_format``."""

    def __init__(self, slow_s: float = 3.0) -> None:
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.by_marker: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    def marker(self, text: str) -> str:
        for name in ("MALFORMED", "SLOW", "FLAKY", "TRUNCATE", "EMPTY"):
            if name in text:
                return name
        return "VALID"

    @staticmethod
    def verdict(schema: dict[str, Any], text: str) -> dict[str, Any]:
        props = schema.get("properties", {})
        if "classifications" in props:
            return {"classifications": [{"statement": "s", "reason": "in context", "attributed": 1}]}
        if "question" in props and "noncommittal" in props:
            return {"question": "What is the capital of France?", "noncommittal": 0}
        if "verdict" in props:
            return {"reason": "useful", "verdict": 1}
        if "statements" in props:
            items = props["statements"].get("items", {})
            if "$ref" in items or items.get("type") == "object":
                return {"statements": [{"statement": "Paris is the capital.", "reason": "stated", "verdict": 1}]}
            return {"statements": [] if "EMPTY" in text else ["Paris is the capital of France."]}
        if "text" in props:
            return {"text": "still not json"}
        return {}

    def content(self, marker: str, schema: dict[str, Any], text: str) -> str:
        """The reply's text; a subclass scripts other conversations over the same protocol."""
        return "this is {not json" if marker == "MALFORMED" else json.dumps(self.verdict(schema, text))

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = "\n".join(m.get("content", "") for m in body.get("messages", []))
        marker = self.marker(text)
        with self._lock:
            self.requests.append(body)
            self.by_marker[marker] += 1
            count = self.by_marker[marker]
        if marker == "SLOW":
            time.sleep(self.slow_s)
        if marker == "FLAKY" and count == 1:
            return 500, {"error": {"message": "temporary overload"}}
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        content = self.content(marker, schema, text)
        finish = "length" if marker == "TRUNCATE" else "stop"
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-judge"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split()),
                      "total_tokens": len(text.split()) + len(content.split())},
        }

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", 0))
                status, payload = outer.handle(json.loads(self.rfile.read(length)))
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer(slow_s=2.5)
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------ MLflow server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(VENV_BIN)) or "mlflow"
    command = [mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with serving(command, root / "server.log", port, ("/health",), 120, env) as url:
        yield url

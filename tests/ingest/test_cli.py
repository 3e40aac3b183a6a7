"""The ``rag`` command as a user runs it: real subprocesses, JSON output, exit codes, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.indexing.manifest import Manifest
from rag.indexing.store import VectorStore
from rag.settings import Settings

RAG = [sys.executable, "-m", "rag"]


def run_rag(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RAG_DATA_DIR": str(data_dir), **env}
    return subprocess.run([*RAG, *args], capture_output=True, text=True, env=environment, timeout=300)


def write_corpus(path: Path, n: int) -> Path:
    lines = [
        json.dumps(
            {
                "_id": f"doc-{i}",
                "title": f"Record {i}",
                "text": f"Record {i} says that item {i} weighs {i} kg.",
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ingest_json_twice_then_status(tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nAlpha is the first letter.")
    (corpus / "b.txt").write_text("B\n\nBeta is the second letter.")
    first = run_rag(["ingest", str(corpus), "--json"], tmp_path / "data")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    for key in (
        "documents_seen",
        "documents_added",
        "documents_updated",
        "documents_unchanged",
        "documents_deleted",
        "documents_failed",
        "chunks_written",
        "chunks_deleted",
        "seconds",
        "chunks_per_second",
        "index_version",
    ):
        assert key in summary
    assert summary["documents_added"] == 2 and summary["chunks_written"] == 2
    second = json.loads(run_rag(["ingest", str(corpus), "--json"], tmp_path / "data").stdout)
    assert second["chunks_written"] == 0 and second["index_version"] == summary["index_version"]
    (corpus / "b.txt").unlink()
    third = json.loads(run_rag(["ingest", str(corpus), "--json"], tmp_path / "data").stdout)
    assert third["documents_deleted"] == 1 and third["chunks_deleted"] == 1
    status = json.loads(run_rag(["status", "--json"], tmp_path / "data").stdout)
    assert status["index_version"] == third["index_version"] != summary["index_version"]
    assert (status["documents"], status["chunks"], status["chunks_in_store"], status["consistent"]) == (
        1,
        1,
        1,
        True,
    )


def test_strict_exit_code_and_clear_errors(tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("Fine text")
    (corpus / "bad.txt").write_bytes(b"\x00\xff\x00")
    lenient = run_rag(["ingest", str(corpus)], tmp_path / "data")
    assert lenient.returncode == 0 and "bad.txt" in lenient.stdout
    strict = run_rag(["ingest", str(corpus), "--strict"], tmp_path / "data")
    assert strict.returncode == 1
    missing = run_rag(["ingest", str(tmp_path / "missing")], tmp_path / "data")
    assert (
        missing.returncode == 2 and "source not found" in missing.stderr and "Traceback" not in missing.stderr
    )
    unknown = run_rag(["ingest", str(corpus), "--frobnicate"], tmp_path / "data")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr
    bad_setting = run_rag(["status"], tmp_path / "data", RAG_CHUNK_SIZE="ten")
    assert (
        bad_setting.returncode == 2
        and "RAG_CHUNK_SIZE='ten'" in bad_setting.stderr
        and len(bad_setting.stderr.strip().splitlines()) == 1
    )


def test_sigkill_mid_ingest_then_resume_gives_exact_counts(tmp_path: Path) -> None:
    n = 300
    corpus = write_corpus(tmp_path / "corpus.jsonl", n)
    data_dir = tmp_path / "data"
    environment = {**os.environ, "RAG_DATA_DIR": str(data_dir), "RAG_INGEST_BATCH_CHUNKS": "16"}
    process = subprocess.Popen(
        [*RAG, "ingest", str(corpus), "--json"], env=environment, stdout=subprocess.DEVNULL
    )
    manifest_dir = Settings(data_dir=data_dir).manifest_dir
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            written = len(Manifest.load(manifest_dir, "documents").documents)
        except Exception:  # the file may be mid-rename on the first poll
            written = 0
        if written >= 32:
            break
        time.sleep(0.05)
    assert process.poll() is None, "ingestion finished before it could be killed; make the corpus bigger"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = Manifest.load(manifest_dir, "documents")
    assert interrupted.dirty and 0 < len(interrupted.documents) < n

    resumed = run_rag(["ingest", str(corpus), "--json"], data_dir)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["documents_unchanged"] == len(interrupted.documents)
    assert summary["documents_added"] == n - len(interrupted.documents)
    assert summary["total_documents"] == n and summary["total_chunks"] == n
    assert summary["chunks_embedded"] <= n - len(
        interrupted.documents
    )  # leftovers of the killed run are reused
    settings = Settings(data_dir=data_dir)
    manifest = Manifest.load(settings.manifest_dir, "documents")
    store_ids = VectorStore(settings).all_ids()
    assert not manifest.dirty and store_ids == manifest.chunk_ids() and len(store_ids) == n
    again = json.loads(run_rag(["ingest", str(corpus), "--json"], data_dir).stdout)
    assert again["chunks_written"] == 0 and again["documents_unchanged"] == n


@pytest.mark.usefixtures("chroma_server")
def test_http_client_against_a_real_chroma_server(chroma_server: str, tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Server\n\nChunks go to a Chroma server over HTTP.")
    env = {"RAG_CHROMA_URL": chroma_server, "RAG_COLLECTION": "http-test"}
    result = run_rag(["ingest", str(corpus), "--json"], tmp_path / "data", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chunks_written"] == 1
    assert not (tmp_path / "data" / "chroma").exists()  # nothing went to the embedded store
    status = json.loads(run_rag(["status", "--json"], tmp_path / "data", **env).stdout)
    assert status["store"] == chroma_server and status["chunks_in_store"] == 1 and status["consistent"]

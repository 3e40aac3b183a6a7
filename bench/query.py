"""Query benchmark: in-process retrieval latency, HTTP under load (locust), streaming time to first token.

- In-process: ``Retriever.retrieve`` per mode on distinct SciFact questions (a fresh query-embedding cache per
  mode), with the time of each component; then the same questions again (cache hits) and the persisted BM25
  index loaded vs rebuilt.
- HTTP: a real ``rag serve`` (uvicorn) on loopback, locust headless at 1, 8 and 32 users for a bounded time,
  first with the extractive generator (retrieval-bound), then with the default local model. The rate limit is
  raised for the run; 429 and 503 are counted apart from other errors.
- Streaming: sequential ``/v1/query/stream`` requests with the local model: time to the first token event and to
  the final result.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import httpx

from bench.common import REPO_ROOT, WORK_DIR, BenchError, machine_info, percentiles, require_scifact, table
from bench.retrieval_study import embedder_overrides
from rag.settings import RetrievalMode, Settings

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MODES: tuple[RetrievalMode, ...] = get_args(RetrievalMode)


def load_questions(limit: int | None = None) -> list[str]:
    """Distinct SciFact questions (test first, then train), only the text."""
    scifact = require_scifact()
    test_ids = {line.split("\t")[0] for line in (scifact / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    questions: list[tuple[int, str]] = []
    with (scifact / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                questions.append((0 if str(record["_id"]) in test_ids else 1, str(record["text"])))
    ordered = list(dict.fromkeys(text for _, text in sorted(questions, key=lambda x: x[0])))
    return ordered[:limit] if limit else ordered


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def inprocess(settings: Settings, questions: Sequence[str]) -> dict[str, Any]:
    """Latency of ``Retriever.retrieve`` per mode, its components, the query cache and BM25 load vs rebuild."""
    from rag.answering.retrieval import Retriever
    from rag.indexing.embedding import Embedder
    from rag.indexing.manifest import Manifest
    from rag.indexing.sparse import SparseIndex
    from rag.indexing.store import VectorStore

    embedder = Embedder(settings)
    store = VectorStore(settings)
    warm = Retriever(settings, embedder=embedder, store=store)
    for question in questions[-5:]:  # warm-up: model, Chroma, BM25 load (questions not reused below)
        warm.retrieve(question)
    modes: dict[str, Any] = {}
    for mode in MODES:
        retriever = Retriever(settings, embedder=embedder, store=store)  # fresh query-embedding cache
        retriever.retrieve(questions[-6], mode=mode)
        timings = []
        for question in questions[:-6]:
            tick = time.perf_counter()
            retriever.retrieve(question, mode=mode)
            timings.append(time.perf_counter() - tick)
        modes[mode] = {"n": len(timings), **{k: ms(v) for k, v in percentiles(timings).items() if v is not None}}
        if mode == "hybrid":
            cached = []
            for question in questions[:-6]:
                tick = time.perf_counter()
                retriever.retrieve(question, mode=mode)
                cached.append(time.perf_counter() - tick)
            modes["hybrid (query embedding cached)"] = {
                "n": len(cached),
                **{k: ms(v) for k, v in percentiles(cached).items() if v is not None},
            }
    modes.update(reranked(settings, embedder, store, questions[:-6]))

    components: dict[str, list[float]] = {"embed_query": [], "chroma_query": [], "bm25_search": [], "manifest_load": []}
    index = warm.sparse_index()
    assert index is not None
    for question in questions[: min(100, len(questions) - 6)]:
        tick = time.perf_counter()
        vector = embedder.embed_query(question)
        components["embed_query"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        store.query(vector, settings.candidate_k)
        components["chroma_query"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        index.search(question, settings.candidate_k)
        components["bm25_search"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        Manifest.load(settings.manifest_dir, store.name)
        components["manifest_load"].append(time.perf_counter() - tick)
    parts = {name: ms(percentiles(values, (50,))["p50"] or 0.0) for name, values in components.items()}

    directory = SparseIndex.directory(settings.bm25_dir, store.name)
    loads = []
    for _ in range(3):
        tick = time.perf_counter()
        SparseIndex.load(directory)
        loads.append(time.perf_counter() - tick)
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        SparseIndex.build(store.iter_chunks(), Path(tmp) / "bm25", "bench", with_title=settings.embed_titles)
        rebuild = time.perf_counter() - tick
    return {
        "chunks": store.count(),
        "modes": modes,
        "component_p50_ms": parts,
        "bm25_load_ms": ms(min(loads)),
        "bm25_rebuild_ms": ms(rebuild),
    }


def reranked(settings: Settings, embedder: Any, store: Any, questions: Sequence[str]) -> dict[str, Any]:
    """Hybrid retrieval with the cross-encoder reordering the top N (query embeddings cached: the rerank cost alone)."""
    from rag.answering.retrieval import Retriever

    out: dict[str, Any] = {}
    for candidates in sorted({10, 20, settings.rerank_candidates}):
        config = settings.with_overrides(rerank=True, rerank_candidates=candidates)
        retriever = Retriever(config, embedder=embedder, store=store)
        subset = questions[: min(60, len(questions))]
        for question in subset:
            retriever.embed_query(question)  # warm the cache: the rows compare reranking, not encoding
        timings = []
        for question in subset:
            tick = time.perf_counter()
            retriever.retrieve(question, mode="hybrid")
            timings.append(time.perf_counter() - tick)
        row = {k: ms(v) for k, v in percentiles(timings).items() if v is not None}
        out[f"hybrid + rerank N={candidates} (query embedding cached)"] = {"n": len(timings), **row}
    return out


def rerank_share(result: dict[str, Any]) -> dict[str, Any] | None:
    """What reranking adds to retrieval (p50), as a share of the local model's full answer time (p50)."""
    modes = result["inprocess"]["modes"]
    base = modes.get("hybrid (query embedding cached)", {}).get("p50")
    answer = (result.get("http", {}).get("local") or {}).get("streaming", {}).get("answer_s", {}).get("p50")
    if base is None:
        return None
    out: dict[str, Any] = {"full_answer_p50_s": answer}
    for name, row in modes.items():
        if name.startswith("hybrid + rerank"):
            added = max(0.0, row["p50"] - base)
            out[name] = {
                "added_p50_ms": round(added, 1),
                "share_of_answer": round(added / 1000 / answer, 3) if answer else None,
            }
    return out


class Server:
    """``rag serve`` in a subprocess on a free loopback port, ready when /readyz says so."""

    def __init__(self, env: dict[str, str], generator: str, log: Path, ready_timeout_s: float = 900) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._handle = log.open("w")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve", "--port", str(self.port), "--generator", generator],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )
        deadline = started + ready_timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"rag serve exited with {self.process.returncode}; see {log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            self.stop()
            raise BenchError(f"rag serve was not ready within {ready_timeout_s:.0f}s; see {log}")
        self.ready_s = round(time.perf_counter() - started, 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()


def locust(url: str, users: int, seconds: int, questions_file: Path, work: Path, mode: str | None) -> dict[str, Any]:
    """One headless locust run; throughput and latency from its CSV, status codes from the locustfile."""
    prefix = work / f"locust-{users}"
    statuses = work / f"statuses-{users}.json"
    statuses.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_QUESTIONS": str(questions_file),
        "BENCH_MODE": mode or "",
        "BENCH_STATUS_OUT": str(statuses),
    }
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f", str(LOCUSTFILE),
        "--headless",
        "-u", str(users),
        "-r", str(users),
        "--run-time", f"{seconds}s",
        "--stop-timeout", str(max(30, seconds)),
        "--host", url,
        "--csv", str(prefix),
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds * 3 + 120)
    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.exists():
        raise BenchError(f"locust wrote no statistics (exit {done.returncode}): {done.stderr[-2000:]}")
    with stats.open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    counts = json.loads(statuses.read_text()) if statuses.exists() else {}
    codes = {k: v for k, v in counts.items() if k.isdigit()}
    # Our own per-status counters include requests that finished during --stop-timeout; locust's table may not.
    total = sum(codes.values()) if codes else int(row["Request Count"])
    failures = total - codes.get("200", 0) if codes else int(row["Failure Count"])
    return {
        "users": users,
        "seconds": seconds,
        "requests": total,
        "locust_requests": int(row["Request Count"]),
        "throughput_rps": round(float(row["Requests/s"]), 2),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "max_ms": float(row["Max Response Time"]),
        "ok": counts.get("200", total - failures),
        "answered": counts.get("answered"),
        "abstained": counts.get("abstained"),
        "http_429": counts.get("429", 0),
        "http_503": counts.get("503", 0),
        "other_errors": failures - counts.get("429", 0) - counts.get("503", 0),
    }


def stream_once(url: str, question: str, timeout_s: float) -> dict[str, Any]:
    """One streamed answer: seconds to the first token event and to the result event."""
    started = time.perf_counter()
    first: float | None = None
    result: dict[str, Any] | None = None
    event = ""
    with httpx.stream("POST", f"{url}/v1/query/stream", json={"question": question}, timeout=timeout_s) as response:
        if response.status_code != 200:
            return {"status": response.status_code}
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if event == "token" and first is None:
                    first = time.perf_counter() - started
                elif event == "result":
                    result = json.loads(line.split(":", 1)[1])
    total = time.perf_counter() - started
    return {
        "status": 200,
        "ttft_s": first,
        "total_s": total,
        "abstained": bool(result and result["abstained"]),
        "prompt_tokens": (result or {}).get("usage", {}).get("prompt_tokens"),
        "completion_tokens": (result or {}).get("usage", {}).get("completion_tokens"),
        "retrieval_ms": (result or {}).get("timings_ms", {}).get("retrieval"),
    }


def streaming(url: str, questions: Sequence[str], timeout_s: float) -> dict[str, Any]:
    runs = [stream_once(url, q, timeout_s) for q in questions]
    generated = [r for r in runs if r.get("status") == 200 and not r["abstained"] and r["ttft_s"] is not None]
    return {
        "requests": len(runs),
        "generated": len(generated),
        "abstained": sum(1 for r in runs if r.get("abstained")),
        "errors": sum(1 for r in runs if r.get("status") != 200),
        "ttft_s": percentiles([r["ttft_s"] for r in generated], (50, 95)),
        "answer_s": percentiles([r["total_s"] for r in generated], (50, 95)),
        "prompt_tokens_p50": percentiles([r["prompt_tokens"] or 0 for r in generated], (50,))["p50"],
        "completion_tokens_p50": percentiles([r["completion_tokens"] or 0 for r in generated], (50,))["p50"],
        "runs": runs,
    }


def run(
    *,
    quick: bool = False,
    data_dir: Path | None = None,
    backend: str = "bge-small-int8",
    skip_generation: bool = False,
    users: Sequence[int] = (1, 8, 32),
    questions: Sequence[str] | None = None,
    seconds: int | None = None,
    work_root: Path = WORK_DIR,
) -> dict[str, Any]:
    """Needs an ingested index: the SciFact one from ``python -m bench ingest`` by default."""
    from bench.quality import corpus_copy, ensure_index, load_dataset, quick_dataset

    work = work_root / ("query-quick" if quick else "query")
    work.mkdir(parents=True, exist_ok=True)
    models = work_root / "shared" / "models"
    if data_dir is None:
        scifact = load_dataset(require_scifact())
        if quick:
            dataset = quick_dataset(scifact, work_root / "quality-quick")
            data_dir = work_root / "quality-quick" / f"ours-{backend}"
            index = ensure_index(dataset.corpus, data_dir, backend, models)
        else:
            corpus = corpus_copy(scifact, work_root / "ingest-scifact-full")
            data_dir = work_root / "ingest-scifact-full" / f"ours-{backend}"
            index = ensure_index(corpus, data_dir, backend, models)
    else:
        index = {"data_dir": str(data_dir)}
    overrides = embedder_overrides(backend)
    settings = Settings(data_dir=data_dir, **overrides)
    questions = list(questions) if questions is not None else load_questions(60 if quick else 806)
    if len(questions) < 12:
        raise BenchError("the query benchmark needs at least 12 distinct questions")
    seconds = seconds or (10 if quick else 30)
    result: dict[str, Any] = {
        "benchmark": "query",
        "machine": machine_info(),
        "config": {
            "quick": quick,
            "data_dir": str(data_dir),
            "index": index,
            "backend": backend,
            "top_k": settings.top_k,
            "candidate_k": settings.candidate_k,
            "context_chars": settings.context_chars,
            "generator_cache_prompt": settings.generator_cache_prompt,
            "questions": len(questions),
            "load_seconds_extractive": seconds,
            "load_seconds_local": 2 * seconds,
        },
    }
    print("[bench query] in-process retrieval ...", flush=True)
    result["inprocess"] = inprocess(settings, questions)

    questions_file = work / "questions.json"
    questions_file.write_text(json.dumps(questions))
    env = {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_EMBEDDING_MODEL": str(overrides["embedding_model"]),
        "RAG_EMBEDDING_BACKEND": str(overrides.get("embedding_backend", "torch")),
        "RAG_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    http: dict[str, Any] = {}
    print("[bench query] HTTP, extractive generator ...", flush=True)
    server = Server(env, "extractive", work / "server-extractive.log")
    try:
        http["extractive"] = {
            "ready_s": server.ready_s,
            "streaming": streaming(server.url, questions[:5], 60),
            "runs": [locust(server.url, u, seconds, questions_file, work, None) for u in users],
        }
    finally:
        server.stop()
    if not skip_generation:
        print("[bench query] HTTP and streaming, local generator ...", flush=True)
        server = Server(env, "local", work / "server-local.log")
        try:
            http["local"] = {
                "ready_s": server.ready_s,
                "streaming": streaming(server.url, questions[6 : 6 + (3 if quick else 20)], 300),
                "runs": [locust(server.url, u, 2 * seconds, questions_file, work, None) for u in users],
            }
        finally:
            server.stop()
    result["http"] = http
    result["rerank_share_of_answer"] = rerank_share(result)
    return result


def render(result: dict[str, Any]) -> str:
    inproc = result["inprocess"]
    rows = [{"mode": mode, **values} for mode, values in inproc["modes"].items()]
    lines = [
        table(
            rows,
            [("mode", "mode"), ("n", "queries"), ("p50", "p50 ms"), ("p95", "p95 ms"), ("p99", "p99 ms")],
            f"In-process retrieval over {inproc['chunks']:,} chunks (top_k={result['config']['top_k']}, "
            f"candidate_k={result['config']['candidate_k']})",
        ),
        "",
        f"Components (p50 ms): {inproc['component_p50_ms']}; BM25 load {inproc['bm25_load_ms']} ms vs rebuild "
        f"{inproc['bm25_rebuild_ms']} ms",
        "",
    ]
    http_rows = []
    for generator, info in result["http"].items():
        for run in info["runs"]:
            http_rows.append({"generator": generator, **run})
    lines.append(
        table(
            http_rows,
            [
                ("generator", "generator"),
                ("users", "users"),
                ("requests", "requests"),
                ("throughput_rps", "req/s"),
                ("p50_ms", "p50 ms"),
                ("p99_ms", "p99 ms"),
                ("ok", "200"),
                ("http_429", "429"),
                ("http_503", "503"),
                ("other_errors", "other errors"),
            ],
            "HTTP /v1/query under load (locust, loopback)",
        )
    )
    for generator, info in result["http"].items():
        s = info["streaming"]
        lines += [
            "",
            f"Streaming /v1/query/stream, {generator} generator ({s['generated']} generated of {s['requests']}, "
            f"sequential): first token p50 {s['ttft_s']['p50']} s, p95 {s['ttft_s']['p95']} s; full answer p50 "
            f"{s['answer_s']['p50']} s, p95 {s['answer_s']['p95']} s; prompt tokens p50 {s['prompt_tokens_p50']}",
        ]
    if result.get("rerank_share_of_answer"):
        lines += ["", f"Reranking added to retrieval, share of a full answer: {result['rerank_share_of_answer']}"]
    return "\n".join(lines)

"""Embedder and reranker configurations side by side, for ``python -m bench quality``.

- Embedders (``EMBEDDERS``): bge-small-en-v1.5 int8 (the default), all-MiniLM-L6-v2 int8 and torch; each gets its
  own index built by the product's ``IngestionPipeline``.
- Reranking: the product's ``Retriever`` returns the fused top ``DEPTH`` chunks with every chunk's cross-encoder
  logit; each grid point (candidates N, weight w) is then replayed with the product's own ``Reranker`` over those
  chunks. Logits are cached on disk per (max tokens, question, passage), so the grid and reruns cost nothing extra.
- Tuning uses SciFact TRAIN queries only; test, the labelled sample set and PubMedQA are scored once per
  configuration with paired bootstrap intervals against reranking off.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import ndcg_at_k, ranked_documents
from rag.ml.slices import bootstrap_ci
from rag.settings import Settings

EMBEDDERS: dict[str, dict[str, Any]] = {
    "bge-small-int8": {"embedding_model": "bge-small-en-v1.5"},
    "minilm-onnx-int8": {"embedding_model": "all-MiniLM-L6-v2", "embedding_backend": "onnx-int8"},
    "minilm-torch": {"embedding_model": "all-MiniLM-L6-v2", "embedding_backend": "torch"},
}
ALIASES = {"onnx-int8": "minilm-onnx-int8", "torch": "minilm-torch", "bge": "bge-small-int8"}
RERANK_GRID = {"candidates": (10, 20), "weight": (0.25, 0.5, 0.75, 1.0)}  # N=30 left out: 1.5x the scoring time
DEPTH = 20  # fused chunks scored per question (the grid's largest N)


def embedder_overrides(name: str) -> dict[str, Any]:
    """Settings fields selecting one embedder configuration (``torch``/``onnx-int8`` name the MiniLM backends)."""
    return dict(EMBEDDERS[ALIASES.get(name, name)])


class CachedScorer:
    """The product's ``CrossEncoder`` behind an on-disk cache of logits (sqlite, one row per pair)."""

    def __init__(self, settings: Settings, path: Path) -> None:
        from rag.answering.rerank import CrossEncoder

        self.encoder = CrossEncoder(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS logits (key TEXT PRIMARY KEY, value REAL)")
        self._lock = threading.Lock()
        self.computed = 0

    def _key(self, query: str, passage: str) -> str:
        raw = f"{self.encoder.max_tokens}\x00{query}\x00{passage}".encode()
        return hashlib.sha256(raw).hexdigest()

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        keys = [self._key(q, p) for q, p in pairs]
        with self._lock:
            found: dict[str, float] = {}
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                found.update(self._db.execute(f"SELECT key, value FROM logits WHERE key IN ({marks})", part))
            missing = [i for i, key in enumerate(keys) if key not in found]
            if missing:
                fresh = self.encoder.score([pairs[i] for i in missing])
                rows = [(keys[i], float(v)) for i, v in zip(missing, fresh, strict=True)]
                self._db.executemany("INSERT OR REPLACE INTO logits VALUES (?, ?)", rows)
                self._db.commit()
                found.update(rows)
                self.computed += len(missing)
        return np.asarray([found[key] for key in keys], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return self.encoder.to_dict()


@dataclass
class Question:
    text: str
    relevance: dict[str, int]  # doc id -> grade


@dataclass
class Scored:
    """One question's fused top chunks: (chunk id, doc id, passage, fused score), best first."""

    question: Question
    chunks: list[tuple[str, str, str, float]]


def collect(settings: Settings, embedder: Any, scorer: CachedScorer, questions: Sequence[Question]) -> list[Scored]:
    """Fused top-DEPTH chunks per question from the product's Retriever (reranking off: the fused order)."""
    from rag.answering.rerank import Reranker, passage_text
    from rag.answering.retrieval import Retriever

    off = settings.with_overrides(rerank=False)
    retriever = Retriever(off, embedder=embedder, reranker=Reranker(off, encoder=scorer))  # type: ignore[arg-type]
    out = []
    for question in questions:
        result = retriever.retrieve(question.text, k=DEPTH)
        chunks = [(c.chunk_id, c.doc_id, passage_text(c.title, c.text), c.score) for c in result.chunks]
        out.append(Scored(question, chunks))
    return out


def replay(
    settings: Settings, scorer: CachedScorer, rows: Sequence[Scored], *, candidates: int, weight: float
) -> list[list[str]]:
    """Each chunk's document, best chunk first, as the product's Reranker orders them (weight 0 = reranking off)."""
    from rag.answering.rerank import Reranker

    if weight == 0:
        return [[doc for _, doc, _, _ in row.chunks] for row in rows]
    config = settings.with_overrides(rerank=True, rerank_candidates=candidates, rerank_weight=weight)
    reranker = Reranker(config, encoder=scorer)  # type: ignore[arg-type]
    out = []
    for row in rows:
        doc_of = {cid: doc for cid, doc, _, _ in row.chunks}
        # k=1: the re-scored head is the top ``candidates`` (as in the product, where top_k <= candidates)
        outcome = reranker.rerank(row.question.text, [(c, p, f) for c, _, p, f in row.chunks], 1)
        out.append([doc_of[cid] for cid in outcome.order])
    return out


def metrics(rankings: Sequence[list[str]], rows: Sequence[Scored]) -> dict[str, np.ndarray]:
    """Per question: nDCG@10 over documents (a document scores as its best chunk), and whether a relevant document
    owns one of the top 3 chunks (what the generator is shown first)."""
    pairs = list(zip(rankings, rows, strict=True))
    ndcg = [ndcg_at_k(ranked_documents(docs), row.question.relevance, 10) for docs, row in pairs]
    hit3 = [float(any(d in row.question.relevance for d in docs[:3])) for docs, row in pairs]
    return {"ndcg_at_10": np.asarray(ndcg), "hit_at_3": np.asarray(hit3)}


def grid_configs() -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = [{"candidates": 0, "weight": 0.0}]
    configs += [{"candidates": n, "weight": w} for n in RERANK_GRID["candidates"] for w in RERANK_GRID["weight"]]
    return configs


def label(config: dict[str, Any]) -> str:
    return "off" if config["weight"] == 0 else f"N={config['candidates']},w={config['weight']}"


def interval(values: np.ndarray, seed: int) -> dict[str, Any]:
    low, high = bootstrap_ci(values, n_resamples=1000, seed=seed)
    return {"mean": round(float(np.nanmean(values)), 4), "ci95": [round(low, 4), round(high, 4)]}


def evaluate(
    settings: Settings, scorer: CachedScorer, rows: Sequence[Scored], configs: Sequence[dict[str, Any]], seed: int
) -> dict[str, Any]:
    """Every configuration's metrics with CIs, and its paired difference to reranking off."""
    per: dict[str, dict[str, np.ndarray]] = {}
    for config in configs:
        per[label(config)] = metrics(replay(settings, scorer, rows, **config), rows)
    out: dict[str, Any] = {}
    for name, values in per.items():
        out[name] = {metric: interval(v, seed) for metric, v in values.items()}
        if name != "off":
            out[name]["minus_off"] = {m: interval(v - per["off"][m], seed) for m, v in values.items()}
    return out


def tune(settings: Settings, scorer: CachedScorer, rows: Sequence[Scored], seed: int) -> dict[str, Any]:
    """The grid on TRAIN questions; the best mean nDCG@10 wins (ties: the cheaper configuration listed first)."""
    results = evaluate(settings, scorer, rows, grid_configs(), seed)
    best = max(grid_configs(), key=lambda c: results[label(c)]["ndcg_at_10"]["mean"])
    return {"grid": results, "best": best}


def rerank_latency(settings: Settings, rows: Sequence[Scored], candidates: int, limit: int = 30) -> dict[str, Any]:
    """Uncached cross-encoder time per question for its top ``candidates`` passages (the cost reranking adds)."""
    from rag.answering.rerank import CrossEncoder

    encoder = CrossEncoder(settings).load()
    seconds = []
    for row in rows[:limit]:
        pairs = [(row.question.text, passage) for _, _, passage, _ in row.chunks[:candidates]]
        started = time.perf_counter()
        encoder.score(pairs)
        seconds.append(time.perf_counter() - started)
    values = np.asarray(seconds) * 1000
    return {
        "questions": len(seconds),
        "candidates": candidates,
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
    }


def labelled_questions(path: Path, answerable_only: bool = True) -> list[Question]:
    """Questions of a JSONL labelled set (``reference_doc_ids``) or a PubMedQA folder, via eval's loader."""
    from eval.datasets import load_dataset

    dataset = load_dataset(path, work_dir=Path("/tmp") / "ragkit-bench-corpora")
    return [
        Question(s.question, dict(s.relevance))
        for s in dataset.samples
        if s.relevance and (s.answerable is not False or not answerable_only)
    ]


def dump(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str))


class NullScorer:
    """Stands in for the cross-encoder where only the fused order is wanted (embedder comparisons)."""

    max_tokens = 0

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return np.zeros(len(pairs), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "none"}


def ensure_ingested(
    sources: Sequence[Path], data_dir: Path, overrides: dict[str, Any], shared_models: Path
) -> Settings:
    """Ingest ``sources`` into ``data_dir`` with one embedder configuration (a no-op when already there)."""
    from ingest.pipeline import IngestionPipeline

    if not data_dir.exists():
        data_dir.mkdir(parents=True)
        shared_models.mkdir(parents=True, exist_ok=True)
        (data_dir / "models").symlink_to(shared_models.resolve(), target_is_directory=True)
    settings = Settings(data_dir=data_dir, **overrides)
    IngestionPipeline(settings, progress=False).run(list(sources))
    return settings


def compare_embedders(
    sets: dict[str, tuple[list[Path], list[Question]]], names: Sequence[str], work: Path, seed: int
) -> dict[str, Any]:
    """Fused (hybrid, reranking off) nDCG@10 and hit@3 of each embedder on each labelled set, side by side."""
    from rag.indexing.embedding import Embedder

    out: dict[str, Any] = {}
    for set_name, (sources, questions) in sets.items():
        per: dict[str, dict[str, np.ndarray]] = {}
        for name in names:
            settings = ensure_ingested(
                sources, work / set_name / f"ours-{name}", embedder_overrides(name), work / "models"
            )
            rows = collect(settings, Embedder(settings), NullScorer(), questions)  # type: ignore[arg-type]
            per[name] = metrics(replay(settings, NullScorer(), rows, candidates=0, weight=0.0), rows)  # type: ignore[arg-type]
        out[set_name] = {
            name: {metric: interval(v, seed) for metric, v in values.items()} for name, values in per.items()
        }
        base = names[0]
        for name in names[1:]:
            out[set_name][name][f"minus_{base}"] = {m: interval(v - per[base][m], seed) for m, v in per[name].items()}
    return out


def beir_questions(queries: dict[str, str], qrels: dict[str, dict[str, int]], limit: int | None) -> list[Question]:
    """Questions of one BEIR split in id order; ``limit`` keeps the first N (a fixed, reproducible subset)."""
    items = sorted(qrels.items())[:limit] if limit else sorted(qrels.items())
    return [Question(queries[qid], dict(grades)) for qid, grades in items if qid in queries]


def rerank_study(
    settings: Settings,
    embedder: Any,
    train: Sequence[Question],
    test: Sequence[Question],
    others: dict[str, Sequence[Question] | tuple[Settings, Sequence[Question]]],
    cache: Path,
    seed: int,
) -> dict[str, Any]:
    """Tune (N, weight) on train; score every grid point on test and on the other labelled sets; time it.

    ``others`` maps a set name to its questions over ``settings``' index, or to (its own settings, questions).
    """
    from rag.indexing.embedding import Embedder

    scorer = CachedScorer(settings, cache)
    tuned = tune(settings, scorer, collect(settings, embedder, scorer, train), seed)
    test_rows = collect(settings, embedder, scorer, test)
    result: dict[str, Any] = {
        "train_questions": len(train),
        "tuned_on_train": tuned["best"],
        "train": tuned["grid"],
        "test": evaluate(settings, scorer, test_rows, grid_configs(), seed),
    }
    for name, entry in others.items():
        own, questions = entry if isinstance(entry, tuple) else (settings, entry)
        rows = collect(own, embedder if own is settings else Embedder(own), scorer, questions)
        result[name] = evaluate(own, scorer, rows, grid_configs(), seed)
    best_n = tuned["best"]["candidates"] or max(RERANK_GRID["candidates"])
    result["latency"] = rerank_latency(settings, test_rows, best_n)
    result["pairs_scored_now"] = scorer.computed
    return result

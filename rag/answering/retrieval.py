"""Dense (Chroma), sparse (BM25) and hybrid retrieval: a convex combination of normalised scores (default) or
weighted reciprocal rank fusion (``RAG_FUSION``).

Every returned chunk carries its cosine similarity to the question, also when BM25 found it, because
abstention and confidence are decided on that one comparable scale.

Consistency while an ingestion runs. Chroma is updated in place, so the snapshot of a published index version is
its BM25 directory: the version stamp and the exact chunk ids of that version, swapped in as a whole by ingestion
as its last step. Every query reads one snapshot and reports its version; dense hits outside that snapshot's
chunk ids (written by a run still in progress) are left out, and a chunk the run deleted meanwhile is dropped,
never replaced. So each answer uses only chunks of the version it reports (possibly fewer of them), and that
version is one that was published. Chunk ids hash their content, so a chunk id always means the same text.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.answering.rerank import Reranker, RerankOutcome, passage_text
from rag.errors import IndexNotReadyError, InvalidInputError
from rag.indexing.embedding import Embedder
from rag.indexing.manifest import Manifest
from rag.indexing.sparse import FILTERABLE_KEYS, SparseIndex
from rag.indexing.store import StoredChunk, VectorStore
from rag.settings import RetrievalMode, Settings

FILTER_OPERATORS = {"$eq", "$ne", "$in", "$nin"}
QUERY_CACHE_SIZE = 1024


@dataclass
class RetrievedChunk:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    dense_score: float
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None
    rerank_score: float | None = None  # the cross-encoder's raw logit (higher = more relevant); None if not scored
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrievalResult:
    chunks: list[RetrievedChunk]
    mode: RetrievalMode
    index_version: str | None
    query_embedding: np.ndarray
    seconds: float

    @property
    def top_dense(self) -> float | None:
        return max((c.dense_score for c in self.chunks), default=None)

    @property
    def top_rerank(self) -> float | None:
        """The best cross-encoder logit among the returned chunks (a relevance signal for abstention)."""
        return max((c.rerank_score for c in self.chunks if c.rerank_score is not None), default=None)

    @property
    def rerank_margin(self) -> float | None:
        """Best minus second-best cross-encoder logit; None with fewer than two scored chunks."""
        scores = sorted((c.rerank_score for c in self.chunks if c.rerank_score is not None), reverse=True)
        return scores[0] - scores[1] if len(scores) >= 2 else None


def _scalar_kind(value: Any) -> str | None:
    """The Chroma metadata type of a filter operand, or None when Chroma cannot compare against it.

    Chroma stores str, bool, 64-bit int and float; NaN/inf and out-of-range integers make it fail the whole query,
    which must surface as the caller's 422, not as a store outage.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return "float" if math.isfinite(value) else None
    if isinstance(value, str):
        return "str"
    return None


def normalise_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate the metadata filter and turn it into Chroma's ``where`` syntax."""
    if not filters:
        return None
    scalar = "a string, a boolean, a finite number or a 64-bit integer"
    clauses: list[dict[str, Any]] = []
    for key, condition in filters.items():
        if key not in FILTERABLE_KEYS:
            raise InvalidInputError(
                f"cannot filter on {key!r}", hint=f"filterable fields: {', '.join(FILTERABLE_KEYS)}"
            )
        if isinstance(condition, dict):
            if not condition or set(condition) - FILTER_OPERATORS:
                raise InvalidInputError(
                    f"filter on {key!r} uses {sorted(set(condition) - FILTER_OPERATORS) or 'no operator'}",
                    hint=f"operators: {', '.join(sorted(FILTER_OPERATORS))}",
                )
            for op, operand in condition.items():
                if op in {"$in", "$nin"}:
                    if not isinstance(operand, list) or not operand:
                        raise InvalidInputError(f"{key}.{op} needs a non-empty list")
                    kinds = {_scalar_kind(item) for item in operand}
                    if None in kinds or len(kinds) > 1:
                        raise InvalidInputError(f"{key}.{op} needs a list of {scalar} values, all of one type")
                elif _scalar_kind(operand) is None:
                    raise InvalidInputError(f"{key}.{op} needs {scalar}")
        elif _scalar_kind(condition) is None:
            raise InvalidInputError(f"filter value for {key!r} must be {scalar}, or an operator object")
        clauses.append({key: condition})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def fuse(
    dense: Sequence[tuple[str, float]],
    sparse: Sequence[tuple[str, float]],
    *,
    method: Literal["convex", "rrf"],
    rrf_k: int,
    dense_weight: float,
    bm25_weight: float,
) -> dict[str, float]:
    """Hybrid score per chunk id from the dense and BM25 candidate lists (each best first, with its scores).

    ``convex``: the weighted mean of each list's min-max normalised scores (a chunk missing from a list gets 0
    from it; a list whose scores are all equal gives 1). ``rrf``: weighted reciprocal rank fusion,
    weight / (rrf_k + rank). Convex was chosen on SciFact train queries (docs/PERFORMANCE.md): it keeps how much
    better the first hits are, which ranks alone throw away.
    """
    fused: dict[str, float] = {}
    if method == "rrf":
        for weight, ranked in ((dense_weight, dense), (bm25_weight, sparse)):
            for rank, (chunk_id, _) in enumerate(ranked, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (rrf_k + rank)
        return fused
    total = dense_weight + bm25_weight
    for weight, ranked in ((dense_weight, dense), (bm25_weight, sparse)):
        if not ranked:
            continue
        low = min(score for _, score in ranked)
        high = max(score for _, score in ranked)
        for chunk_id, score in ranked:
            norm = (score - low) / (high - low) if high > low else 1.0
            fused[chunk_id] = fused.get(chunk_id, 0.0) + (weight * norm / total if total > 0 else 0.0)
    return fused


class Retriever:
    """Holds the encoder, the store and the BM25 index; safe to share between request threads."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self.store = store or VectorStore(settings)
        self.reranker = reranker or Reranker(settings)  # checks the model files now: bad files fail at start-up
        self._sparse: SparseIndex | None = None
        self._sparse_ids: frozenset[str] = frozenset()
        self._sparse_lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._version_stamp: tuple[int, int, int] | None = None  # manifest file (inode, mtime, size) last read
        self._version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "mode": s.retrieval_mode,
            "top_k": s.top_k,
            "candidate_k": s.candidate_k,
            "fusion": s.fusion,
            "rrf_k": s.rrf_k,
            "dense_weight": s.dense_weight,
            "bm25_weight": s.bm25_weight,
            "collection": self.store.name,
            "rerank": self.reranker.to_dict(),
        }

    def index_version(self) -> str | None:
        """The manifest's index version, re-read only when the manifest file changes.

        Parsing a SciFact-sized manifest (5k documents) takes 0.1-0.5 s, far more than the rest of a query
        (docs/PERFORMANCE.md); ingestion replaces the file atomically, so its stat stamp changes with every save.
        """
        path = Manifest.path_for(self.settings.manifest_dir, self.store.name)
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._cache_lock:
            if self._version_stamp == stamp:
                return self._version
        version = Manifest.load(self.settings.manifest_dir, self.store.name).index_version
        with self._cache_lock:
            self._version_stamp, self._version = stamp, version
        return version

    def embed_query(self, question: str) -> np.ndarray:
        with self._cache_lock:
            cached = self._query_cache.get(question)
            if cached is not None:
                self._query_cache.move_to_end(question)
                return cached
        vector = self.embedder.embed_query(question)
        with self._cache_lock:
            self._query_cache[question] = vector
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vector

    def sparse_index(self) -> SparseIndex | None:
        """The latest published BM25 snapshot; reloaded when ingestion has published a new one.

        While ingestion swaps the directory, a load can see it missing or half-replaced: then the load is retried,
        and meanwhile the snapshot already held keeps serving.
        """
        directory = SparseIndex.directory(self.settings.bm25_dir, self.store.name)
        with self._sparse_lock:
            on_disk = SparseIndex.stored_version(directory)
            if on_disk is not None and (self._sparse is None or self._sparse.version != on_disk):
                loaded = _load_snapshot(directory)
                if loaded is not None:
                    self._sparse, self._sparse_ids = loaded, frozenset(loaded.chunk_ids)
            return self._sparse

    def published_chunk_ids(self, index: SparseIndex) -> frozenset[str]:
        with self._sparse_lock:
            return self._sparse_ids if index is self._sparse else frozenset(index.chunk_ids)

    def retrieve(
        self,
        question: str,
        k: int | None = None,
        mode: RetrievalMode | None = None,
        filters: dict[str, Any] | None = None,
    ) -> RetrievalResult:
        started = time.perf_counter()
        k = k or self.settings.top_k
        mode = mode or self.settings.retrieval_mode
        where = normalise_filters(filters)
        version = self.index_version()
        if version is None:
            raise IndexNotReadyError(
                f"collection {self.store.name!r} has no documents yet", hint="run `rag ingest PATH` first"
            )
        index = self.sparse_index()
        if index is None and mode != "dense":
            raise IndexNotReadyError("the BM25 index is missing", hint="run `rag ingest` again to rebuild it")
        query = self.embed_query(question)
        pool = max(k, self.settings.candidate_k)
        dense: list[StoredChunk] = self.store.query(query, pool, where) if mode != "bm25" else []
        sparse: list[Any] = []
        if index is not None:  # answer from one published snapshot (see the module docstring)
            version = index.version
            published = self.published_chunk_ids(index)
            dense = [c for c in dense if c.chunk_id in published]
            if mode != "dense":
                sparse = index.search(question, pool, where)
        fused = self._fuse(mode, dense, sparse)
        head = max(k, self.settings.rerank_candidates) if self.settings.rerank else k
        ranked_ids = sorted(fused, key=lambda cid: (-fused[cid], cid))[:head]
        known = self._chunks_for(ranked_ids, dense, query)
        ranked = [
            (cid, passage_text(str(known[cid].metadata.get("title", "")), known[cid].text), fused[cid])
            for cid in ranked_ids
            if cid in known
        ]
        outcome = self.reranker.rerank(question, ranked, k) if ranked else RerankOutcome({}, [], {})
        chunks = [
            self._result_chunk(known[cid], outcome.blended[cid], outcome.scores.get(cid), dense, sparse)
            for cid in outcome.order[:k]
        ]
        return RetrievalResult(chunks, mode, version, query, time.perf_counter() - started)

    def _fuse(self, mode: RetrievalMode, dense: Sequence[StoredChunk], sparse: Sequence[Any]) -> dict[str, float]:
        """One score per candidate chunk id: the cosine, the BM25 score, or the hybrid fusion of both."""
        if mode == "dense":
            return {c.chunk_id: c.score for c in dense}
        if mode == "bm25":
            return {h.chunk_id: h.score for h in sparse}
        return fuse(
            [(c.chunk_id, c.score) for c in dense],
            [(h.chunk_id, h.score) for h in sparse],
            method=self.settings.fusion,
            rrf_k=self.settings.rrf_k,
            dense_weight=self.settings.dense_weight,
            bm25_weight=self.settings.bm25_weight,
        )

    def _chunks_for(
        self, chunk_ids: Sequence[str], dense: Sequence[StoredChunk], query: np.ndarray
    ) -> dict[str, StoredChunk]:
        """Stored chunks for the ranked ids; BM25-only hits are fetched and get their cosine from stored vectors.

        A chunk deleted between the two lookups is missing from the result: dropped, never invented.
        """
        known = {c.chunk_id: c for c in dense}
        missing = [cid for cid in chunk_ids if cid not in known]
        for chunk in self.store.get_chunks(missing):
            known[chunk.chunk_id] = chunk
        if missing:
            for cid, vector in self.store.embeddings_for(missing).items():
                if cid in known:
                    known[cid].score = float(np.dot(vector, query))
        return known

    @staticmethod
    def _result_chunk(
        chunk: StoredChunk,
        score: float,
        rerank_score: float | None,
        dense: Sequence[StoredChunk],
        sparse: Sequence[Any],
    ) -> RetrievedChunk:
        cid = chunk.chunk_id
        return RetrievedChunk(
            chunk_id=cid,
            doc_id=str(chunk.metadata.get("doc_id", "")),
            source=str(chunk.metadata.get("source", "")),
            title=str(chunk.metadata.get("title", "")),
            text=chunk.text,
            score=round(float(score), 6),
            dense_score=round(float(chunk.score), 6),
            bm25_score=next((h.score for h in sparse if h.chunk_id == cid), None),
            dense_rank=next((rank for rank, c in enumerate(dense, start=1) if c.chunk_id == cid), None),
            bm25_rank=next((rank for rank, h in enumerate(sparse, start=1) if h.chunk_id == cid), None),
            rerank_score=None if rerank_score is None else round(float(rerank_score), 6),
            metadata=chunk.metadata,
        )


def _load_snapshot(directory: Path, attempts: int = 20) -> SparseIndex | None:
    """Load a BM25 directory whose stamp reads the same before and after, retrying across an ingestion's swap."""
    for _ in range(attempts):
        before = SparseIndex.stored_version(directory)
        try:
            loaded = SparseIndex.load(directory) if before is not None else None
        except (OSError, ValueError, KeyError):
            loaded = None
        if loaded is not None and loaded.version == before == SparseIndex.stored_version(directory):
            return loaded
        time.sleep(0.05)
    return None
